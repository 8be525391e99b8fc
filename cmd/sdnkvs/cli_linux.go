//go:build linux

package main

// testbedCommands are the commands that build network namespaces.
type testbedCommands struct {
	Testbed TestbedCmd `cmd:"" help:"Build and drive the namespace testbed (client, gateway, DCs, emulated WAN)."`
	Bench   BenchCmd   `cmd:"" help:"Run experiments and benchmarks; print tables, write CSV and PNG."`
	Demo    DemoCmd    `cmd:"" help:"The disaster demo: write and read through the middlebox, cut the near DC, report RPO and RTO."`
}

// BenchCmd groups the experiments.
type BenchCmd struct {
	Forward  BenchForwardCmd  `cmd:"" help:"Single-stream TCP throughput through the anycast path vs kernel forwarding."`
	Kvs      BenchKvsCmd      `cmd:"" help:"KVS throughput and latency: sdnkvs cluster vs redis-server vs etcd."`
	Goodput  BenchGoodputCmd  `cmd:"" help:"The paper's Fig. 7: goodput of one client forked to 1..N servers."`
	Failover BenchFailoverCmd `cmd:"" help:"The paper's Fig. 6: an anycast client across a DC outage, RTO for --detector paper and fast."`
	Race     BenchRaceCmd     `cmd:"" help:"Concurrent forked writers: keys whose value differs between DCs, with and without the sequencer (issue 8)."`
	Rejoin   BenchRejoinCmd   `cmd:"" help:"Catch-up of a healed DC: time and rate against the amount it missed, and forked write latency before, during and after (issue 9)."`
}
