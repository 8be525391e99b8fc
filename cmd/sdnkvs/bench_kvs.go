//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sdnkvs/sdnkvs/bench/kvsbench"
)

// BenchKvsCmd compares a 9-node sdnkvs cluster with redis-server and a
// 3-member etcd cluster on this machine, in one run.
type BenchKvsCmd struct {
	Nodes     int    `name:"nodes" default:"9" help:"sdnkvs nodes (one process each)."`
	Quorum    int    `name:"quorum" default:"5" help:"sdnkvs quorum."`
	Clients   int    `name:"clients" default:"50" help:"Concurrent clients (redis-benchmark -c, etcd workers)."`
	Requests  int    `name:"requests" default:"100000" help:"Requests per redis-benchmark test (doubled when pipelined)."`
	EtcdReqs  int    `name:"etcd-requests" default:"20000" help:"Requests per etcd test."`
	Pipeline  int    `name:"pipeline" default:"16" help:"Pipeline depth of the pipelined runs (redis-benchmark -P)."`
	Keyspace  int    `name:"keyspace" default:"100000" help:"Random keys (redis-benchmark -r)."`
	ValueSize int    `name:"value-size" default:"16" help:"Value size in bytes (redis-benchmark -d)."`
	Sync      bool   `name:"sync" help:"Run sdnkvs with --sync (fsync per commit)."`
	Etcd      string `name:"etcd" default:"/usr/bin/etcd" help:"etcd binary; empty skips etcd."`
	Out       string `name:"out" default:"bench-out" type:"path" help:"Directory for kvs-results.csv, kvs-rss.csv and kvs.png."`
	BinFlag   `embed:""`
}

// Validate checks the flags.
func (c *BenchKvsCmd) Validate() error {
	if c.Nodes < 1 {
		return fmt.Errorf("--nodes %d: want at least 1", c.Nodes)
	}
	if c.Quorum <= c.Nodes/2 || c.Quorum > c.Nodes {
		return fmt.Errorf("--quorum %d: want a majority of --nodes %d (%d..%d)", c.Quorum, c.Nodes, c.Nodes/2+1, c.Nodes)
	}
	for flag, v := range map[string]int{"--clients": c.Clients, "--requests": c.Requests, "--etcd-requests": c.EtcdReqs, "--pipeline": c.Pipeline, "--keyspace": c.Keyspace, "--value-size": c.ValueSize} {
		if v < 1 {
			return fmt.Errorf("%s %d: want at least 1", flag, v)
		}
	}
	return nil
}

// Run runs the comparison and prints the table.
func (c *BenchKvsCmd) Run(g *Globals) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	bin, err := c.binary()
	if err != nil {
		return err
	}
	rep, err := kvsbench.Run(ctx, kvsbench.Config{
		Bin: bin, Nodes: c.Nodes, Quorum: c.Quorum, Clients: c.Clients, Requests: c.Requests, EtcdReqs: c.EtcdReqs,
		Pipeline: c.Pipeline, Keyspace: c.Keyspace, ValueSize: c.ValueSize, Sync: c.Sync,
		EtcdBin: c.Etcd, Out: c.Out, Log: os.Stderr,
	})
	if err != nil {
		return err
	}
	fmt.Print(rep.Table())
	if kv, ok := rep.Find("sdnkvs", "SET", 1); ok {
		if et, ok := rep.Find("etcd", "SET", 0); ok && et.OpsPerS > 0 {
			fmt.Printf("\nlinearizable SET, sdnkvs / etcd: %.2fx\n", kv.OpsPerS/et.OpsPerS)
		}
		if rd, ok := rep.Find("redis-server", "SET", 1); ok && rd.OpsPerS > 0 {
			fmt.Printf("SET, sdnkvs / redis-server: %.2fx\n", kv.OpsPerS/rd.OpsPerS)
		}
	}
	if kv, ok := rep.Find("sdnkvs", "GET", 1); ok {
		if et, ok := rep.Find("etcd", "GET", 0); ok && et.OpsPerS > 0 {
			fmt.Printf("linearizable GET, sdnkvs / etcd: %.2fx\n", kv.OpsPerS/et.OpsPerS)
		}
	}
	fmt.Printf("results in %s/kvs-results.csv, kvs-rss.csv, kvs.png\n", c.Out)
	return nil
}
