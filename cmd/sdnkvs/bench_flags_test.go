//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
)

// The demo and bench failover share the testbed's topology flags: the
// defaults are the paper's two DCs, and values go through the testbed's
// parser and validator.
func TestDCPairFlags(t *testing.T) {
	cli, _, err := parseArgs(t, "demo")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cli.Demo.Config()
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.DCs
	if cfg.Near() != "sydney" || cfg.Far() != "dublin" || d[0].Delay != 5*time.Millisecond || d[1].Delay != 170*time.Millisecond ||
		d[0].Rate != 100e6 || d[1].Rate != 100e6 || d[0].Nodes != 9 || d[1].Nodes != 9 || cfg.Rate != 2000 || d[0].TCPBuffers != 16<<20 {
		t.Fatalf("demo defaults: %+v", cfg)
	}
	cli, _, err = parseArgs(t, "bench", "failover", "--dc", "a,b", "--nodes", "3", "--delay", "a=1ms,b=20ms", "--rate", "0", "--loss", "1%", "--tcp-buffers", "kernel")
	if err != nil {
		t.Fatal(err)
	}
	fcfg, err := cli.Bench.Failover.Config()
	if err != nil {
		t.Fatal(err)
	}
	d = fcfg.DCs
	if fcfg.Near() != "a" || d[0].Delay != time.Millisecond || d[1].Delay != 20*time.Millisecond || d[0].Rate != 0 || d[1].Loss != 0.01 || d[1].Nodes != 3 || d[1].TCPBuffers != -1 {
		t.Fatalf("bench failover topology: %+v", d)
	}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"demo", "--dc", "sydney"}, "--dc"},
		{[]string{"demo", "--dc", "a,b,c"}, "--dc"},
		{[]string{"demo", "--delay", "x=1ms"}, "--delay"},
		{[]string{"demo", "--rate", "5mbps"}, "--rate"},
		{[]string{"demo", "--loss", "2"}, "--loss"},
		{[]string{"demo", "--nodes", "500"}, "--nodes"},
		{[]string{"bench", "failover", "--detector", "psychic"}, "--detector"},
		{[]string{"bench", "kvs", "--nodes", "3", "--quorum", "5"}, "--quorum"},
		{[]string{"bench", "forward", "--tun-mode", "magic"}, "--tun-mode"},
	} {
		_, _, err := parseArgs(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.flag)
		}
	}
}
