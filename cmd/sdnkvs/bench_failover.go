//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/failoverbench"
	"github.com/sdnkvs/sdnkvs/failover"
)

// BenchFailoverCmd is the paper's Fig. 6: an anycast client reading over
// one connection (with a PING every --ping-every, so client data is in
// flight) across a cut of the near DC, for each failure detector in the
// same run; it prints detection time, RTO (first reply byte from the far
// DC) and the full-value time side by side; optionally repeated cuts under
// write load for RPO.
type BenchFailoverCmd struct {
	DCPairFlags `embed:""`
	Detectors   []string      `name:"detector" default:"paper,fast" help:"Middlebox detectors to compare, one run each (safe, fast, paper, none)."`
	CutAt       time.Duration `name:"cut-at" default:"5s" help:"When the near DC is cut in each run."`
	Duration    time.Duration `name:"duration" default:"40s" help:"Longest run per detector."`
	ReadSize    int           `name:"read-size" default:"65536" help:"Bytes of the value the reader fetches, request after request."`
	Until       time.Duration `name:"until" default:"5s" help:"End a run this long after the first reply from the far DC (negative: run the whole duration)."`
	PingEvery   time.Duration `name:"ping-every" default:"50ms" help:"The reader also sends a PING this often on its connection, so client data is in flight while replies flow (negative: never)."`
	RTOMin      time.Duration `name:"client-rto-min" default:"0" help:"Set this rto_min on the client namespace's routes (0: kernel default, 200ms), e.g. 1s to reproduce hosts with a larger RTO floor (Algorithm 1 counts the client's retransmissions)."`
	Cuts        int           `name:"cuts" default:"0" help:"Then cut the near DC this many times at random moments under forked writes and check RPO (0: skip)."`
	CutsRate    float64       `name:"write-rate" default:"1000" help:"Writes per second during --cuts."`
	MBArgs      []string      `name:"middlebox-arg" sep:"none" help:"Extra middlebox flag (repeatable)."`
	Seed        uint64        `name:"seed" help:"Seed for the random cut times (0: time-based)."`
	BinFlag     `embed:""`
	Out         string `name:"out" default:"bench-out" type:"path" help:"Directory for CSV and PNG (empty: none)."`
}

// Config converts the flags.
func (c *BenchFailoverCmd) Config() (failoverbench.Config, error) {
	bin, err := c.binary()
	if err != nil {
		return failoverbench.Config{}, err
	}
	topo, err := c.Topology()
	if err != nil {
		return failoverbench.Config{}, err
	}
	return failoverbench.Config{
		Bin: bin, Topology: topo, Detectors: c.Detectors, MiddleboxArgs: c.MBArgs, CutAt: c.CutAt, Duration: c.Duration,
		Until: c.Until, PingEvery: c.PingEvery, ClientRTOMin: c.RTOMin, ReadSize: c.ReadSize, Cuts: c.Cuts, CutsRate: c.CutsRate, Seed: c.Seed, Out: c.Out, Log: os.Stdout,
	}, nil
}

// Validate checks the flags.
func (c *BenchFailoverCmd) Validate() error {
	for _, d := range c.Detectors {
		if _, err := failover.ParseMode(d); err != nil {
			return fmt.Errorf("--detector: %w", err)
		}
	}
	if c.CutAt <= 0 || c.CutAt >= c.Duration {
		return fmt.Errorf("--cut-at %v: want within (0, --duration %v)", c.CutAt, c.Duration)
	}
	if c.RTOMin < 0 || c.RTOMin > time.Minute || (c.RTOMin > 0 && c.RTOMin < time.Millisecond) {
		return fmt.Errorf("--client-rto-min %v: want 0 (kernel default) or 1ms..1m", c.RTOMin)
	}
	if c.PingEvery == 0 || (c.PingEvery > 0 && c.PingEvery < time.Millisecond) {
		return fmt.Errorf("--ping-every %v: want at least 1ms (negative: never)", c.PingEvery)
	}
	if c.Cuts < 0 {
		return errors.New("--cuts: want 0 or more")
	}
	_, err := c.Topology()
	return err
}

// Run runs the experiment.
func (c *BenchFailoverCmd) Run(g *Globals) error {
	if os.Geteuid() != 0 {
		return errors.New("bench failover: needs root (network namespaces, TUN devices)")
	}
	cfg, err := c.Config()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := failoverbench.Run(ctx, cfg)
	if res != nil {
		res.Print(os.Stdout)
	}
	if err != nil {
		return err
	}
	if c.Cuts > 0 && res.RPOLost > 0 {
		return fmt.Errorf("bench failover: %d acknowledged writes lost", res.RPOLost)
	}
	return nil
}
