package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"github.com/sdnkvs/sdnkvs/middlebox"
	"github.com/sdnkvs/sdnkvs/netstackio"
)

// MiddleboxCmd runs the edge middlebox on a TUN device:
//
//	sdnkvs middlebox --tun sdn0 --vip 10.200.100.1 \
//	  --multicast 6379 --anycast 6380 \
//	  --dc sydney=10.210.1.11:6379,10.210.1.12:6379 \
//	  --dc dublin=10.210.2.11:6379 --control 127.0.0.1:9090 --routes
//
// With --routes it installs, and removes on exit, the gateway routes
// documented on middlebox.RouteConfig.
type MiddleboxCmd struct {
	TUN         string        `name:"tun" default:"sdn0" help:"TUN interface to create."`
	VIP         string        `name:"vip" required:"" help:"Service virtual IPv4 address (routed into the TUN)."`
	Multicast   []uint16      `name:"multicast" sep:"," help:"Multicast (forked, critical) service ports: each connection goes to one node in every live DC. Repeat or comma-separate."`
	Anycast     []uint16      `name:"anycast" sep:"," help:"Anycast service ports: each connection goes to one node of the most preferred live DC. Repeat or comma-separate."`
	DC          []string      `name:"dc" sep:"none" help:"A DC as name=ip:port[,ip:port...]; repeat, most preferred first."`
	Control     string        `name:"control" default:"127.0.0.1:9090" help:"Control HTTP listener (/metrics, /flows, /dcs, /healthz; POST /dcs/NAME/admit)."`
	Routes      bool          `name:"routes" help:"Install (and remove on exit) the VIP route, node-reply policy rules and sysctls."`
	RouteTable  int           `name:"route-table" default:"100" help:"Routing table for node replies (with --routes)."`
	DCIface     string        `name:"dc-iface" help:"Interface node replies arrive on; the reply rules match only it (with --routes; default: the interface of the route to each node)."`
	TUNMode     string        `name:"tun-mode" enum:"offload,plain" default:"offload" help:"TUN I/O: offload (virtio-net headers, TSO, batched) or plain (one packet per call)."`
	MTU         int           `name:"mtu" default:"1500" help:"TUN MTU."`
	MaxFlows    int           `name:"max-flows" default:"262144" help:"Flow table size; new connections beyond it get a RST."`
	IdleTimeout time.Duration `name:"idle-timeout" default:"5m" help:"Remove flows idle this long."`
	HalfOpen    time.Duration `name:"half-open-timeout" default:"5s" help:"Remove a flow whose handshake has not completed this long after its SYN (SYN_SENT, SYN_RECV)."`
	MaxHalfOpen int           `name:"max-half-open" default:"256" help:"Half-open flows one client address may hold; its further SYNs are dropped (SYN-flood resistance)."`
	MaxPerSrc   int           `name:"max-flows-per-source" default:"4096" help:"Flows (connections) one client address may hold; its further SYNs get a RST, so one client cannot fill the nodes' --maxclients. 0: no limit."`

	Detector      failover.Mode `name:"detector" default:"safe" help:"Failure detector: safe (default: down only on failed probes, or on duplicates from several clients and flows confirmed by the node's silence and a failed probe; never the last live DC), fast (every signal, uncorroborated: one client's retransmissions count), paper (the paper's Algorithm 1 alone; one client's few SYNs take a DC down: for reproduction only), none (liveness only via SetNodeLive)."`
	Probe         prober.Kind   `name:"probe" default:"ready" help:"Detector probes: ready (HTTP GET http://<node-ip>:<probe-port>/ready), tcp (connect to <node-ip>:<probe-port>), none."`
	ProbePort     uint16        `name:"probe-port" default:"${ready_port}" help:"Port probed on each node (not the service port: its replies are routed into the TUN)."`
	ProbeInterval time.Duration `name:"probe-interval" default:"100ms" help:"Interval between probes of one node."`

	MinReplicas      int           `name:"min-replicas" default:"1" help:"Forked flows: fewest live DCs a connection may run on; below it the client gets a RST."`
	SACK             bool          `name:"sack" default:"true" negatable:"" help:"Forked flows: keep SACK, offering the client only the blocks every live DC holds (--no-sack strips it, as the paper does)."`
	HandshakeTimeout time.Duration `name:"handshake-timeout" default:"3s" help:"Forked flows: DCs that have not answered the SYN by then are left out."`
	BranchTimeout    time.Duration `name:"branch-timeout" default:"10s" help:"Forked flows: a DC lagging the others this long without progress is dropped from the flow."`
	VerifyReplies    bool          `name:"verify-replies" default:"true" negatable:"" help:"Forked flows: compare the DCs' reply bytes (hashes over agreed ranges) and drop a DC that answers other bytes than the others from the flow (logged with flow, DC and offset; fork_reply_mismatches_total). --no-verify-replies turns it off, e.g. for commands whose answer names the node (INFO)."`
	HoldBytes        int           `name:"hold-bytes" default:"8192" help:"Forked flows: reply bytes past what every DC has sent that a flow keeps, to deliver them at once when a DC leaves the flow instead of after the survivors' retransmission timeout (0: none; at most 65536)."`

	SequencerFlags `embed:""`
	RejoinFlags    `embed:""`
}

// flagOf maps middlebox.Config fields (ConfigError.Field) to the flags
// that set them.
var flagOf = map[string]string{
	"VIP":                      "--vip",
	"AnycastPorts":             "--anycast",
	"MulticastPorts":           "--multicast",
	"DCs":                      "--dc",
	"MaxFlows":                 "--max-flows",
	"IdleTimeout":              "--idle-timeout",
	"HalfOpenTimeout":          "--half-open-timeout",
	"MaxHalfOpenPerSource":     "--max-half-open",
	"MaxFlowsPerSource":        "--max-flows-per-source",
	"Fork.MinReplicas":         "--min-replicas",
	"Fork.HandshakeTimeout":    "--handshake-timeout",
	"Fork.BranchTimeout":       "--branch-timeout",
	"Fork.HoldBytes":           "--hold-bytes",
	"Failover.Detector":        "--detector",
	"Failover.Probe":           "--probe",
	"Failover.ProbePort":       "--probe-port",
	"Failover.Prober":          "--probe-interval",
	"Failover.Prober.Interval": "--probe-interval",
	"Lifecycle":                "--rejoin",
	"Lifecycle.Mode":           "--rejoin",
}

// config maps the flags to the middlebox configuration and checks it
// (middlebox.Config.Validate); errors name the flag at fault.
func (c *MiddleboxCmd) config() (middlebox.Config, error) {
	var cfg middlebox.Config
	if c.TUN == "" || len(c.TUN) > 15 {
		return cfg, fmt.Errorf("--tun: interface name %q must have 1..15 characters", c.TUN)
	}
	vip, err := netip.ParseAddr(c.VIP)
	if err != nil {
		return cfg, fmt.Errorf("--vip: %q is not an IPv4 address", c.VIP)
	}
	cfg.VIP = vip
	cfg.AnycastPorts, cfg.MulticastPorts = c.Anycast, c.Multicast
	for _, s := range c.DC {
		dc, err := failover.ParseDC(s)
		if err != nil {
			return cfg, fmt.Errorf("--dc: %w", err)
		}
		cfg.DCs = append(cfg.DCs, dc)
	}
	// A zero Config field takes its default; as a flag value it is an error.
	if c.MaxFlows < 1 {
		return cfg, fmt.Errorf("--max-flows: %d out of range [1, %d]", c.MaxFlows, 1<<24)
	}
	if c.MinReplicas < 1 {
		return cfg, fmt.Errorf("--min-replicas: %d is below 1", c.MinReplicas)
	}
	if c.HandshakeTimeout <= 0 || c.BranchTimeout <= 0 {
		return cfg, errors.New("--handshake-timeout/--branch-timeout: must be positive")
	}
	cfg.MaxFlows, cfg.IdleTimeout = c.MaxFlows, c.IdleTimeout
	if c.HalfOpen <= 0 {
		return cfg, fmt.Errorf("--half-open-timeout: %v is not positive", c.HalfOpen)
	}
	if c.MaxHalfOpen < 1 {
		return cfg, fmt.Errorf("--max-half-open: %d is below 1", c.MaxHalfOpen)
	}
	cfg.HalfOpenTimeout, cfg.MaxHalfOpenPerSource = c.HalfOpen, c.MaxHalfOpen
	switch {
	case c.MaxPerSrc < 0:
		return cfg, fmt.Errorf("--max-flows-per-source: %d is negative (0: no limit)", c.MaxPerSrc)
	case c.MaxPerSrc == 0:
		cfg.MaxFlowsPerSource = -1
	default:
		cfg.MaxFlowsPerSource = c.MaxPerSrc
	}
	cfg.Fork.MinReplicas = c.MinReplicas
	cfg.Fork.SACK = c.SACK
	cfg.Fork.HandshakeTimeout = c.HandshakeTimeout
	cfg.Fork.BranchTimeout = c.BranchTimeout
	cfg.Fork.NoVerify = !c.VerifyReplies
	cfg.Fork.HoldBytes = c.HoldBytes
	if c.HoldBytes == 0 {
		cfg.Fork.HoldBytes = -1 // none (a zero Config field is the default)
	}
	if c.Detector != failover.None {
		det := failover.DefaultConfig()
		det.Mode = c.Detector
		cfg.Failover = &middlebox.FailoverConfig{Detector: det, Probe: c.Probe, ProbePort: c.ProbePort, Prober: prober.Config{Interval: c.ProbeInterval}}
	}
	if cfg.Sequencing, err = c.SequencerFlags.config(cfg.MulticastPorts); err != nil {
		return cfg, err
	}
	if cfg.Lifecycle, err = c.RejoinFlags.config(cfg.Sequencing != nil, c.SequencerState); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		var fe *middlebox.ConfigError
		if errors.As(err, &fe) && flagOf[fe.Field] != "" {
			return cfg, fmt.Errorf("%s: %w", flagOf[fe.Field], fe.Err)
		}
		return cfg, err
	}
	// Flags with no Config field.
	if _, err := netip.ParseAddrPort(c.Control); err != nil {
		if _, _, err2 := net.SplitHostPort(c.Control); err2 != nil {
			return cfg, fmt.Errorf("--control: %q is not host:port", c.Control)
		}
	}
	if c.RouteTable <= 0 || c.RouteTable == 253 || c.RouteTable == 254 || c.RouteTable == 255 {
		return cfg, fmt.Errorf("--route-table: %d is not a free table number (1..2^31-1, not 253-255)", c.RouteTable)
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return cfg, fmt.Errorf("--mtu: %d out of range [576, 65535]", c.MTU)
	}
	return cfg, nil
}

// Validate is called by kong after parsing.
func (c *MiddleboxCmd) Validate() error {
	_, err := c.config()
	return err
}

// Run creates the TUN, optionally installs routes, runs the data path and
// the control listener until SIGINT/SIGTERM, then undoes everything.
func (c *MiddleboxCmd) Run(g *Globals) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	log := slog.Default().With("component", "middlebox")
	mode := netstackio.ModeOffload
	if c.TUNMode == "plain" {
		mode = netstackio.ModePlain
	}
	dev, err := netstackio.OpenTUN(c.TUN, netstackio.TUNOptions{MTU: c.MTU, Mode: mode})
	if err != nil {
		return fmt.Errorf("open TUN %s: %w", c.TUN, err)
	}
	mb, err := middlebox.New(dev, cfg)
	if err != nil {
		dev.Close()
		return err
	}
	defer mb.Close()
	if c.Routes {
		var nodes []netip.AddrPort
		for _, dc := range cfg.DCs {
			nodes = append(nodes, dc.Nodes...)
		}
		undo, err := middlebox.InstallRoutes(middlebox.RouteConfig{TUN: c.TUN, VIP: cfg.VIP, Nodes: nodes, Table: c.RouteTable, DCIface: c.DCIface})
		if err != nil {
			return err
		}
		log.Info("routes installed", "vip", cfg.VIP, "table", c.RouteTable, "rules", len(nodes))
		defer func() {
			if err := undo(); err != nil {
				log.Error("removing routes", "err", err)
			} else {
				log.Info("routes removed")
			}
		}()
	}
	ln, err := net.Listen("tcp", c.Control)
	if err != nil {
		return fmt.Errorf("--control: %w", err)
	}
	srv := &http.Server{Handler: mb.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())

	runErr := make(chan error, 1)
	go func() { runErr <- mb.Run() }()
	log.Info("middlebox running", "tun", c.TUN, "mode", mode, "vip", cfg.VIP, "anycast", c.Anycast, "multicast", c.Multicast,
		"dcs", len(cfg.DCs), "control", ln.Addr().String(), "detector", c.Detector, "rejoin", cfg.Lifecycle.Mode.String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
		return nil
	case err := <-runErr:
		return err
	}
}
