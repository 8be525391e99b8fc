//go:build linux

package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/rejoin"
)

// BenchRejoinCmd is issue 9's catch-up experiment: cut one DC, write K keys
// into the other, heal, and measure how long the DC takes to catch up and
// be live again, and what that costs forked writes.
type BenchRejoinCmd struct {
	DCPairFlags   `embed:""`
	Cases         string        `name:"cases" default:"10000x32,100000x32,1000000x32,2000x64KiB" help:"Amounts missed, one case after the other: KEYSxBYTES (keys with k or M, bytes with KiB), comma-separated."`
	Cut           string        `name:"cut" help:"The DC that misses the writes (default: the far one)."`
	Steady        time.Duration `name:"steady" default:"5s" help:"Probe time with both DCs live before each cut (the latency baseline)."`
	After         time.Duration `name:"after" default:"5s" help:"Probe time after each rejoin."`
	RejoinTimeout time.Duration `name:"rejoin-timeout" default:"10m" help:"Longest heal-to-live wait per case."`
	CatchupRate   string        `name:"catchup-rate" help:"The nodes' --catchup-rate (bytes/s of record data, e.g. 8MiB; default: theirs)."`
	Loaders       int           `name:"loaders" default:"8" help:"Load connections (MSET through the forked port)."`
	Window        int           `name:"window" default:"4" help:"MSETs in flight per load connection."`
	Detector      string        `name:"detector" default:"fast" enum:"safe,fast,paper" help:"Middlebox failure detector."`
	MBArgs        []string      `name:"middlebox-arg" sep:"none" help:"Extra middlebox flag (repeatable)."`
	KVSArgs       []string      `name:"kvs-arg" sep:"none" help:"Extra 'kvs cluster' flag (repeatable)."`
	BinFlag       `embed:""`
	Out           string `name:"out" default:"bench-out" type:"path" help:"Directory for rejoin.csv, rejoin-latency.csv and the PNGs (empty: none)."`
}

// Config converts the flags; errors name the flag.
func (c *BenchRejoinCmd) Config() (rejoin.Config, error) {
	topo, err := c.Topology()
	if err != nil {
		return rejoin.Config{}, err
	}
	cases, err := rejoin.ParseCases(c.Cases)
	if err != nil {
		return rejoin.Config{}, errors.New("--cases: " + err.Error())
	}
	if c.Loaders < 1 || c.Window < 1 {
		return rejoin.Config{}, errors.New("--loaders, --window: want at least 1")
	}
	if c.Steady <= 0 || c.After <= 0 || c.RejoinTimeout <= 0 {
		return rejoin.Config{}, errors.New("--steady, --after, --rejoin-timeout: want positive durations")
	}
	return rejoin.Config{Bin: "-", Topology: topo, Cases: cases, Cut: c.Cut, Steady: c.Steady, After: c.After,
		RejoinTimeout: c.RejoinTimeout, CatchupRate: c.CatchupRate, Detector: c.Detector, MiddleboxArgs: c.MBArgs,
		KVSArgs: c.KVSArgs, Loaders: c.Loaders, Window: c.Window, Out: c.Out, Log: os.Stderr}.WithDefaults()
}

// Validate checks the flags.
func (c *BenchRejoinCmd) Validate() error {
	_, err := c.Config()
	return err
}

// Run runs the experiment and prints the table.
func (c *BenchRejoinCmd) Run(g *Globals) error {
	if os.Geteuid() != 0 {
		return errors.New("bench rejoin: needs root (network namespaces, TUN devices)")
	}
	cfg, err := c.Config()
	if err != nil {
		return err
	}
	if cfg.Bin, err = c.binary(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := rejoin.Run(ctx, cfg)
	if res != nil {
		res.Print(os.Stdout)
	}
	return err
}
