//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/demo"
)

// DemoCmd is the disaster demo: testbed up, write through the forked port,
// read through the anycast port, cut the near DC, report RPO and RTO, tear
// everything down (also on Ctrl-C and on error).
type DemoCmd struct {
	DCPairFlags `embed:""`
	Scenario    string             `name:"scenario" default:"cut" enum:"cut,lifecycle" help:"cut: cut the near DC once. lifecycle: cut the near DC, heal it, wait until it has caught up and is live again, cut the far DC (--cycles disasters, alternating); needs sequenced stores with catch-up (set up by the demo)."`
	Duration    time.Duration      `name:"duration" default:"30s" help:"How long the workload runs (cut scenario)."`
	CutAt       time.Duration      `name:"cut-at" default:"12s" help:"When the near DC is cut (after the workload starts); negative: never. Lifecycle: the first cut."`
	Lifecycle   DemoLifecycleFlags `embed:"" group:"lifecycle"`
	Detector    string             `name:"detector" default:"fast" enum:"safe,fast,paper,none" help:"Middlebox failure detector (sdnkvs middlebox --detector): fast (every signal), safe (corroborated signals only), paper (Algorithm 1 alone), none."`
	Mode        string             `name:"mode" default:"sdn" enum:"sdn,direct" help:"sdn: through the middlebox; direct: baseline, the client uses one near node, no middlebox."`
	Writers     int                `name:"writers" default:"8" help:"Write connections (forked port)."`
	Window      int                `name:"window" default:"128" help:"Writes in flight per write connection."`
	Rate        float64            `name:"write-rate" default:"2000" help:"Total writes per second (negative: as fast as the windows allow)."`
	Readers     int                `name:"readers" default:"4" help:"Read connections (anycast port), one request at a time each."`
	ValueSize   int                `name:"value-size" default:"32" help:"Bytes per value."`
	OpTimeout   time.Duration      `name:"op-timeout" default:"0s" help:"Client-side timeout per operation (0: none; rely on the middlebox)."`
	MBArgs      []string           `name:"middlebox-arg" sep:"none" help:"Extra middlebox flag (repeatable), e.g. --middlebox-arg=--min-replicas=1."`
	BinFlag     `embed:""`
	Data        string `name:"data" type:"path" help:"Store data directory (default: a temporary one, removed)."`
	Out         string `name:"out" default:"demo-out" type:"path" help:"Directory for the CSV and PNG (empty: none)."`
	JSON        bool   `name:"json" help:"Print one JSON object (progress goes to stderr)."`
	Runs        int    `name:"runs" default:"1" help:"Cut scenario: run the demo this many times, each on a fresh testbed, and report the distribution (min, median, p90, max) of RTO and longest write stall (table or JSON, CSV and PNG in --out; one progress line per run on stderr)."`
}

// Config converts the flags.
func (c *DemoCmd) Config() (demo.Config, error) {
	bin, err := c.binary()
	if err != nil {
		return demo.Config{}, err
	}
	cut := c.CutAt
	if cut == 0 {
		cut = -1
	}
	topo, err := c.Topology()
	if err != nil {
		return demo.Config{}, err
	}
	lc, err := c.Lifecycle.config(c.Scenario)
	if err != nil {
		return demo.Config{}, err
	}
	return demo.Config{
		Bin: bin, Topology: topo, Scenario: c.Scenario, Lifecycle: lc, Mode: c.Mode, Detector: c.Detector, MiddleboxArgs: c.MBArgs,
		Duration: c.Duration, CutAt: cut, Writers: c.Writers, Window: c.Window, Rate: c.Rate,
		Readers: c.Readers, ValueSize: c.ValueSize, OpTimeout: c.OpTimeout, DataDir: c.Data, Out: c.Out,
	}.WithDefaults()
}

// Validate checks the flags before anything is built.
func (c *DemoCmd) Validate() error {
	if c.Writers < 0 || c.Readers < 0 || c.Window < 1 && c.Writers > 0 {
		return errors.New("--writers, --readers, --window: want positive values")
	}
	if c.Runs < 1 || c.Runs > 1000 {
		return fmt.Errorf("--runs: %d out of range [1, 1000]", c.Runs)
	}
	if c.Runs > 1 && (c.Scenario != demo.ScenarioCut || c.CutAt < 0) {
		return errors.New("--runs: only with --scenario cut and a cut (--cut-at >= 0)")
	}
	_, err := c.Config()
	return err
}

// Run runs the demo.
func (c *DemoCmd) Run(g *Globals) error {
	if os.Geteuid() != 0 {
		return errors.New("demo: needs root (network namespaces, TUN devices)")
	}
	cfg, err := c.Config()
	if err != nil {
		return err
	}
	var out io.Writer = os.Stdout
	cfg.Log = os.Stdout
	if c.JSON || cfg.Scenario == demo.ScenarioLifecycle {
		cfg.Log = os.Stderr // the lifecycle scenario's progress always goes to stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.Scenario == demo.ScenarioLifecycle {
		return runLifecycleDemo(ctx, cfg, out, c.JSON)
	}
	if c.Runs > 1 {
		return runDemoSeries(ctx, cfg, c.Runs, out, c.JSON)
	}
	res, err := demo.Run(ctx, cfg)
	if err != nil {
		if res != nil {
			res.Print(cfg.Log)
		}
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(out)
		return enc.Encode(res)
	}
	res.Print(out)
	if res.RPOLost > 0 && cfg.Mode == "sdn" {
		return fmt.Errorf("demo: %d acknowledged writes lost", res.RPOLost)
	}
	return nil
}

// runDemoSeries runs the cut scenario n times and prints the distribution.
func runDemoSeries(ctx context.Context, cfg demo.Config, n int, out io.Writer, asJSON bool) error {
	res, err := demo.RunSeries(ctx, cfg, n, os.Stderr)
	if err != nil {
		if res != nil && res.Runs > 0 {
			res.Print(os.Stderr)
		}
		return err
	}
	if asJSON {
		if err := json.NewEncoder(out).Encode(res); err != nil {
			return err
		}
	} else {
		res.Print(out)
	}
	if res.Lost() > 0 && cfg.Mode == "sdn" {
		return fmt.Errorf("demo: %d acknowledged writes lost over %d runs", res.Lost(), n)
	}
	return nil
}
