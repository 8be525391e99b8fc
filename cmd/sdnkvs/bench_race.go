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

	"github.com/sdnkvs/sdnkvs/bench/race"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// BenchRaceCmd is issue 8's experiment: W barrier-synchronised writers SET
// the same key through the forked port each round; then every key is read
// inside each DC and keys whose values differ between DCs are counted,
// with and without the sequencer, in one run.
type BenchRaceCmd struct {
	Writers     []int         `name:"writers" sep:"," default:"2,4,8" help:"Concurrent writers per race, one race each."`
	Rounds      int           `name:"rounds" default:"200" help:"Rounds (keys) per race."`
	DC          string        `name:"dc" default:"sydney,dublin" help:"DC names in preference order, comma-separated."`
	Nodes       int           `name:"nodes" default:"3" help:"kvs nodes per DC."`
	Delay       string        `name:"delay" default:"sydney=5ms,dublin=170ms" help:"One-way delay of DC links: '5ms' for all, or per DC."`
	Loss        string        `name:"loss" help:"Random loss of DC links, each direction: '1%' for all, or per DC."`
	Sequenced   bool          `name:"sequenced" default:"true" negatable:"" help:"Run the races with the sequencer (nodes with --order-port, middlebox with --sequenced)."`
	Baseline    bool          `name:"baseline" default:"true" negatable:"" help:"Also run them without the sequencer (today's behaviour), first, in the same run."`
	Load        time.Duration `name:"load" default:"0s" help:"Then a closed-loop SET phase of this length per mode, for throughput and latency (0: none)."`
	LoadClients int           `name:"load-clients" default:"16" help:"Connections of the --load phase."`
	MBArgs      []string      `name:"middlebox-arg" sep:"none" help:"Extra middlebox flag (repeatable)."`
	BinFlag     `embed:""`
	Out         string `name:"out" default:"bench-out" type:"path" help:"Directory for race.csv, race.png, race-load.csv (empty: none)."`
}

// config converts the flags; errors name the flag.
func (c *BenchRaceCmd) config() (race.Config, error) {
	var cfg race.Config
	if len(c.Writers) == 0 {
		return cfg, errors.New("--writers: give at least one writer count")
	}
	for _, w := range c.Writers {
		if w < 1 || w > 256 {
			return cfg, fmt.Errorf("--writers: %d out of range [1, 256]", w)
		}
	}
	if c.Rounds < 1 {
		return cfg, fmt.Errorf("--rounds: %d is below 1", c.Rounds)
	}
	if !c.Sequenced && !c.Baseline {
		return cfg, errors.New("--no-sequenced/--no-baseline: nothing left to run")
	}
	if c.Load < 0 || (c.Load > 0 && c.LoadClients < 1) {
		return cfg, errors.New("--load/--load-clients: need a positive duration and at least one client")
	}
	tc, err := testbed.Spec{DCs: c.DC, Nodes: c.Nodes, Delay: c.Delay, Loss: c.Loss}.Config()
	if err != nil {
		return cfg, err
	}
	cfg = race.Config{DCs: tc.DCs, Writers: c.Writers, Rounds: c.Rounds, Load: c.Load, LoadClients: c.LoadClients, MBExtra: c.MBArgs, Log: os.Stderr}
	if c.Baseline {
		cfg.Modes = append(cfg.Modes, false)
	}
	if c.Sequenced {
		cfg.Modes = append(cfg.Modes, true)
	}
	return cfg, nil
}

// Validate checks the flags.
func (c *BenchRaceCmd) Validate() error {
	_, err := c.config()
	return err
}

// Run runs the races and prints the tables.
func (c *BenchRaceCmd) Run(g *Globals) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	if cfg.Bin, err = c.binary(); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	res, err := race.Run(ctx, cfg)
	if res != nil && len(res.Rows) > 0 {
		fmt.Print(res.Table().String())
		if len(res.Load) > 0 {
			fmt.Println()
			fmt.Print(res.LoadTable().String())
		}
		for _, r := range res.Rows {
			for _, s := range r.Samples {
				fmt.Printf("  differs (sequenced=%v, W=%d): %s\n", r.Sequenced, r.Writers, s)
			}
		}
		if c.Out != "" {
			files, werr := res.WriteFiles(c.Out)
			if werr != nil && err == nil {
				err = werr
			}
			for _, f := range files {
				fmt.Println("wrote", f)
			}
		}
	}
	return err
}
