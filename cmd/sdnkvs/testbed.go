//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// TestbedCmd builds and drives the namespace testbed: client, gateway and
// one namespace per DC, with user-space WAN emulation on the DC links.
type TestbedCmd struct {
	Up     TestbedUpCmd     `cmd:"" help:"Build a testbed and leave it running (a background supervisor runs the WAN emulation)."`
	Down   TestbedDownCmd   `cmd:"" help:"Stop a testbed's supervisor and delete its namespaces."`
	Status TestbedStatusCmd `cmd:"" help:"Show testbeds: namespaces, links, delays, rates, cut state, counters."`
	Exec   TestbedExecCmd   `cmd:"" help:"Run a command in a testbed namespace: sdnkvs testbed exec client -- ping 10.210.1.11"`
	Cut    TestbedCutCmd    `cmd:"" help:"Cut a DC off, as in a disaster: every packet on its link is dropped."`
	Heal   TestbedHealCmd   `cmd:"" help:"Restore a cut DC's link."`
	Serve  TestbedServeCmd  `cmd:"" hidden:"" help:"The supervisor that 'up' starts in the background."`
}

// TopologyFlags describe the topology to build.
type TopologyFlags struct {
	Name       string `help:"Testbed name (prefix of every namespace); default: a generated id, printed at start."`
	DC         string `name:"dc" default:"sydney,dublin" help:"DC names in preference order, comma-separated."`
	Nodes      int    `default:"9" help:"Node addresses per DC (10.210.k.11 ...)."`
	Delay      string `help:"One-way delay of DC links: '5ms' for all, or 'sydney=5ms,dublin=170ms'."`
	Rate       string `help:"Rate cap of DC links, each direction: '100mbit' for all, or per DC."`
	Loss       string `help:"Random loss of DC links, each direction: '0.01' or '1%' for all, or per DC."`
	Queue      string `help:"Queue bytes per direction of emulated links (default: from rate and delay), or per DC."`
	TCPBuffers string `name:"tcp-buffers" default:"16MiB" help:"The most TCP socket buffers grow to in each DC namespace (the maximum of net.ipv4.tcp_rmem and tcp_wmem), as on hosts tuned for a long fat WAN; kernel: its defaults (4 MiB send)."`

	cfg testbed.Config
}

// Validate parses the flags; errors name the flag.
func (f *TopologyFlags) Validate() error {
	cfg, err := testbed.Spec{Name: f.Name, DCs: f.DC, Nodes: f.Nodes, Delay: f.Delay, Rate: f.Rate, Loss: f.Loss, Queue: f.Queue, TCPBuffers: f.TCPBuffers}.Config()
	if err != nil {
		return err
	}
	f.cfg = cfg
	return nil
}

func (f *TopologyFlags) args() []string {
	a := []string{"--name", f.cfg.Name, "--dc", f.DC, "--nodes", strconv.Itoa(f.Nodes)}
	for flag, v := range map[string]string{"--delay": f.Delay, "--rate": f.Rate, "--loss": f.Loss, "--queue": f.Queue} {
		if v != "" {
			a = append(a, flag, v)
		}
	}
	return a
}

// TestbedUpCmd is `sdnkvs testbed up`.
type TestbedUpCmd struct {
	TopologyFlags `embed:""`
	Foreground    bool          `help:"Stay attached and tear down on Ctrl-C instead of leaving a supervisor running."`
	Timeout       time.Duration `default:"60s" help:"How long to wait for the testbed to come up."`
}

func (c *TestbedUpCmd) Run(g *Globals) error {
	if c.cfg.Name == "" {
		c.cfg.Name = testbed.NewRunID()
	}
	fmt.Printf("testbed %s\n", c.cfg.Name)
	if c.Foreground {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return testbed.Serve(ctx, c.cfg, func(st *testbed.State) {
			printStatus(st)
			fmt.Println("up; Ctrl-C tears it down")
		})
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	argv := append([]string{self, "--log-level", g.LogLevel.String(), "testbed", "serve"}, c.args()...)
	st, err := testbed.Detach(argv, c.cfg.Name, c.Timeout)
	if err != nil {
		return err
	}
	printStatus(st)
	fmt.Printf("up; supervisor pid %d, log %s; 'sdnkvs testbed down --name %s' tears it down\n", st.PID, st.Log, st.Name)
	return nil
}

func printStatus(st *testbed.State) {
	links, err := testbed.Links(st.Name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "status of %s: %v\n", st.Name, err)
		return
	}
	_ = testbed.WriteStatus(os.Stdout, st, links)
}

// TestbedServeCmd is the hidden supervisor: it builds the topology, runs
// the delay lines and answers the control socket until down or a signal.
type TestbedServeCmd struct {
	TopologyFlags `embed:""`
}

func (c *TestbedServeCmd) Run(g *Globals) error {
	if c.cfg.Name == "" {
		return errors.New("--name: the supervisor needs the testbed name")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	return testbed.Serve(ctx, c.cfg, func(st *testbed.State) {
		fmt.Printf("testbed %s up (pid %d)\n", st.Name, st.PID)
	})
}

// TestbedDownCmd is `sdnkvs testbed down`.
type TestbedDownCmd struct {
	Name string `help:"Testbed name (default: the only one up)."`
	All  bool   `help:"Tear down every testbed that has a state file."`
}

func (c *TestbedDownCmd) Run(g *Globals) error {
	var names []string
	if c.All {
		var err error
		if names, err = testbed.ListStates(); err != nil {
			return err
		}
	} else {
		n, err := testbed.ResolveName(c.Name)
		if err != nil {
			return err
		}
		names = []string{n}
	}
	var first error
	for _, n := range names {
		if err := testbed.Down(n, 15*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "down %s: %v\n", n, err)
			first = cmp(first, err)
			continue
		}
		fmt.Printf("testbed %s down\n", n)
	}
	return first
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// TestbedStatusCmd is `sdnkvs testbed status`.
type TestbedStatusCmd struct {
	Name string `help:"Testbed name (default: every testbed up)."`
}

func (c *TestbedStatusCmd) Run(g *Globals) error {
	names := []string{c.Name}
	if c.Name == "" {
		var err error
		if names, err = testbed.ListStates(); err != nil {
			return err
		}
		if len(names) == 0 {
			fmt.Println("no testbed is up")
			return nil
		}
	}
	for i, n := range names {
		if i > 0 {
			fmt.Println()
		}
		st, err := testbed.ReadState(n)
		if err != nil {
			return err
		}
		printStatus(st)
	}
	return nil
}

// TestbedExecCmd is `sdnkvs testbed exec NS -- cmd args`.
type TestbedExecCmd struct {
	Name string   `help:"Testbed name (default: the only one up)."`
	NS   string   `arg:"" name:"ns" help:"Namespace: client, gw, or a DC name."`
	Cmd  []string `arg:"" passthrough:"" name:"cmd" help:"Command and arguments (after --)."`
}

func (c *TestbedExecCmd) Run(g *Globals) error {
	n, err := testbed.ResolveName(c.Name)
	if err != nil {
		return err
	}
	argv := c.Cmd
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	err = testbed.ExecIn(n, c.NS, argv)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		os.Exit(ee.ExitCode())
	}
	return err
}

// TestbedCutCmd is `sdnkvs testbed cut DC`.
type TestbedCutCmd struct {
	Name string `help:"Testbed name (default: the only one up)."`
	DC   string `arg:"" name:"dc" help:"DC to cut off."`
}

func (c *TestbedCutCmd) Run(g *Globals) error { return control(c.Name, "cut", c.DC) }

// TestbedHealCmd is `sdnkvs testbed heal DC`.
type TestbedHealCmd struct {
	Name string `help:"Testbed name (default: the only one up)."`
	DC   string `arg:"" name:"dc" help:"DC to reconnect."`
}

func (c *TestbedHealCmd) Run(g *Globals) error { return control(c.Name, "heal", c.DC) }

func control(name, verb, dc string) error {
	n, err := testbed.ResolveName(name)
	if err != nil {
		return err
	}
	if _, err := testbed.Control(n, verb+" "+dc); err != nil {
		return err
	}
	fmt.Printf("testbed %s: %s %s\n", n, verb, dc)
	return nil
}

// DCPairFlags describe the near and the far DC of the demo and the
// failover experiment, in the testbed's vocabulary, parsed and validated
// by the testbed's own parser.
type DCPairFlags struct {
	DC         string `name:"dc" default:"sydney,dublin" help:"The near DC (preferred, the one cut) and the far DC (the survivor), comma-separated."`
	Nodes      int    `name:"nodes" default:"9" help:"kvs nodes per DC."`
	Delay      string `name:"delay" help:"One-way delay of DC links: '20ms' for both, or 'sydney=5ms,dublin=170ms'; default: 5ms near, 170ms far."`
	Rate       string `name:"rate" default:"100mbit" help:"Rate cap of DC links, each direction: '100mbit' for both, or per DC; 0: unlimited."`
	Loss       string `name:"loss" help:"Random loss of DC links, each direction: '0.01' or '1%' for both, or per DC."`
	TCPBuffers string `name:"tcp-buffers" default:"16MiB" help:"The most TCP socket buffers grow to in each DC namespace (the maximum of net.ipv4.tcp_rmem and tcp_wmem), as on hosts tuned for a long fat WAN; kernel: its defaults (4 MiB send)."`
}

// Topology parses the flags; errors name the flag.
func (f *DCPairFlags) Topology() (scenario.Topology, error) {
	cfg, err := testbed.Spec{DCs: f.DC, Nodes: f.Nodes, Delay: f.Delay, Rate: f.Rate, Loss: f.Loss, TCPBuffers: f.TCPBuffers}.Config()
	if err != nil {
		return scenario.Topology{}, err
	}
	if len(cfg.DCs) != 2 {
		return scenario.Topology{}, fmt.Errorf("--dc %q: want two DCs, the near one then the far one", f.DC)
	}
	if f.Delay == "" {
		def := scenario.DefaultDCs()
		cfg.DCs[0].Delay, cfg.DCs[1].Delay = def[0].Delay, def[1].Delay
	}
	return scenario.Topology{DCs: cfg.DCs}.WithDefaults()
}
