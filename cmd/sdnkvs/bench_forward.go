//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/forward"
)

// BenchForwardCmd is `sdnkvs bench forward`: single-stream TCP throughput
// through the middlebox's anycast VIP port vs plain kernel forwarding on
// the same namespace topology, for each TUN mode.
type BenchForwardCmd struct {
	Modes      string        `name:"tun-mode" default:"offload,plain" help:"Middlebox TUN modes to measure (the middlebox's --tun-mode values), comma-separated."`
	KernelOnly bool          `name:"kernel-only" help:"Measure kernel forwarding only (no middlebox)."`
	Duration   time.Duration `default:"10s" help:"Length of each iperf3 run (after a 1 s omitted warm-up)."`
	Repeat     int           `default:"1" help:"Kernel/middlebox run pairs per mode (medians are reported)."`
	Out        string        `name:"out" default:"bench-out" type:"path" help:"Directory for forward.csv, forward-summary.csv and forward.png."`
	BinFlag    `embed:""`
}

// Validate checks the flags.
func (c *BenchForwardCmd) Validate() error {
	if c.Duration < time.Second {
		return fmt.Errorf("--duration: %v is shorter than 1s", c.Duration)
	}
	if c.Repeat < 1 {
		return fmt.Errorf("--repeat: %d, want >= 1", c.Repeat)
	}
	for _, m := range strings.Split(c.Modes, ",") {
		if m = strings.TrimSpace(m); m != "offload" && m != "plain" {
			return fmt.Errorf("--tun-mode: unknown TUN mode %q (want offload, plain)", m)
		}
	}
	return nil
}

func (c *BenchForwardCmd) Run(g *Globals) error {
	cfg := forward.Config{Duration: c.Duration, Repeat: c.Repeat, Log: os.Stderr, Bin: c.Bin}
	if !c.KernelOnly {
		for _, m := range strings.Split(c.Modes, ",") {
			cfg.Modes = append(cfg.Modes, strings.TrimSpace(m))
		}
		bin, err := c.binary()
		if err != nil {
			return err
		}
		cfg.Bin = bin
	}
	// Ctrl-C: the run stops at the next step and its topology is torn down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rs, err := forward.Run(ctx, cfg)
	if len(rs) > 0 {
		if rerr := forward.Report(os.Stdout, rs, c.Out); rerr != nil && err == nil {
			err = rerr
		}
		fmt.Printf("CSV and PNG in %s/\n", c.Out)
	}
	return err
}
