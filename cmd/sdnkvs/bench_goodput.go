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

	"github.com/sdnkvs/sdnkvs/bench/goodput"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// BenchGoodputCmd is `sdnkvs bench goodput`, the paper's Fig. 7: one client
// streams through the VIP's multicast port, forked to N servers (one per
// DC), for each N; goodput is what every server received, per second. A
// direct single-server connection (no middlebox) is measured in the same
// run as the baseline.
type BenchGoodputCmd struct {
	Servers    []int         `name:"servers" sep:"," default:"1,2,3,4,5,6" help:"Numbers of servers (DCs) to fork to, one run each (1..8)."`
	Rate       string        `name:"rate" help:"Rate of each DC link, e.g. 100mbit (user-space WAN emulator); empty: unlimited."`
	RTT        time.Duration `name:"rtt" default:"0s" help:"Round trip added by each DC link, e.g. 20ms (user-space WAN emulator); with neither --rate nor --rtt the links are veth pairs."`
	Duration   time.Duration `name:"duration" default:"10s" help:"Length of each stream."`
	Warmup     time.Duration `name:"warmup" default:"1s" help:"Start of each stream left out of the steady-state goodput."`
	TunMode    string        `name:"tun-mode" enum:"offload,plain" default:"offload" help:"Middlebox TUN mode."`
	MbArgs     []string      `name:"middlebox-arg" help:"Extra middlebox flag (repeatable), e.g. --middlebox-arg=--sack."`
	RTPrio     int           `name:"rt-priority" default:"0" help:"Run the middlebox under SCHED_FIFO at this priority (chrt -f; the WAN emulator's threads run at FIFO 10); 0: normal priority."`
	NoDirect   bool          `name:"no-direct" help:"Skip the direct (no middlebox) single-stream baselines."`
	NoParallel bool          `name:"no-parallel" help:"Skip the N parallel direct streams (one per DC, no middlebox) measured for each N > 1."`
	RcvBuf     string        `name:"rcvbuf" default:"auto" help:"SO_RCVBUF of every server socket, e.g. 512k (caps the receive window; the kernel doubles it); auto: twice the link's bandwidth-delay product with --rate, else the kernel's autotuning; 0: autotuning."`
	Out        string        `name:"out" default:"bench-out" type:"path" help:"Directory for goodput.csv, goodput-summary.csv and goodput.png."`
	BinFlag    `embed:""`
}

// Validate checks the flags.
func (c *BenchGoodputCmd) Validate() error {
	if len(c.Servers) == 0 {
		return errors.New("--servers: give at least one number of servers")
	}
	for _, n := range c.Servers {
		if n < 1 || n > goodput.MaxServers {
			return fmt.Errorf("--servers: %d out of range 1..%d", n, goodput.MaxServers)
		}
	}
	if _, err := testbed.ParseRate(c.Rate); err != nil {
		return fmt.Errorf("--rate: %v", err)
	}
	if _, err := c.rcvbuf(0); err != nil {
		return err
	}
	if c.RTT < 0 || c.RTT > 10*time.Second {
		return fmt.Errorf("--rtt: %v out of range 0..10s", c.RTT)
	}
	if c.RTPrio < 0 || c.RTPrio > 99 {
		return fmt.Errorf("--rt-priority: %d out of range 0..99", c.RTPrio)
	}
	if c.Duration < time.Second {
		return fmt.Errorf("--duration: %v is shorter than 1s", c.Duration)
	}
	if c.Warmup < 0 || c.Warmup >= c.Duration {
		return fmt.Errorf("--warmup: %v: want within [0, --duration %v)", c.Warmup, c.Duration)
	}
	return nil
}

// rcvbuf resolves --rcvbuf for a link rate in bit/s.
func (c *BenchGoodputCmd) rcvbuf(rate uint64) (int, error) {
	if c.RcvBuf == "auto" {
		return goodput.AutoRcvBuf(rate, c.RTT), nil
	}
	v, err := testbed.ParseBytes(c.RcvBuf)
	if err != nil {
		return 0, fmt.Errorf("--rcvbuf: %v (or auto)", err)
	}
	return v, nil
}

// Run runs the benchmark and prints the table.
func (c *BenchGoodputCmd) Run(g *Globals) error {
	if os.Geteuid() != 0 {
		return errors.New("bench goodput: needs root (network namespaces, TUN devices)")
	}
	rate, err := testbed.ParseRate(c.Rate)
	if err != nil {
		return fmt.Errorf("--rate: %v", err)
	}
	rcvbuf, err := c.rcvbuf(rate)
	if err != nil {
		return err
	}
	if c.RcvBuf == "auto" && rcvbuf > 0 {
		fmt.Fprintf(os.Stderr, "server SO_RCVBUF %d bytes (--rcvbuf auto: twice the bandwidth-delay product)\n", rcvbuf)
	}
	bin, err := c.binary()
	if err != nil {
		return err
	}
	cfg := goodput.Config{
		Bin: bin, Servers: c.Servers, Rate: rate, RTT: c.RTT, Duration: c.Duration,
		Warmup: c.Warmup, TunMode: c.TunMode, MiddleboxArgs: c.MbArgs, RTPriority: c.RTPrio, NoDirect: c.NoDirect, NoParallel: c.NoParallel, RcvBuf: rcvbuf, Log: os.Stderr,
	}
	// Ctrl-C: the current stream stops and its topology is torn down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rs, err := goodput.Run(ctx, cfg)
	if len(rs) > 0 {
		if rerr := goodput.Report(os.Stdout, rs, rate, c.Out); rerr != nil && err == nil {
			err = rerr
		}
		fmt.Printf("CSV and PNG in %s/\n", c.Out)
	}
	return err
}
