//go:build linux

package kvsbench

import (
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestOutputs(t *testing.T) {
	dir := t.TempDir()
	rep := &Report{
		Results: []Result{
			{System: "sdnkvs", Test: "SET", Pipeline: 1, OpsPerS: 17000, P50ms: 2.3, P99ms: 5.4},
			{System: "sdnkvs", Test: "GET", Pipeline: 1, OpsPerS: 27000, P50ms: 1.3, P99ms: 3.5},
			{System: "etcd", Test: "SET", OpsPerS: 8000, P50ms: 5.9, P99ms: 12.6},
		},
		RSS: []RSS{{Name: "sdnkvs-node1", PeakMiB: 63, NowMiB: 60}},
	}
	if err := writeOutputs(dir, rep); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "kvs-results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) != 4 || rows[1][3] != "17000" || rows[3][2] != "0" {
		t.Fatalf("csv rows %v, %v", rows, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "kvs.png")); err != nil || st.Size() < 1000 {
		t.Fatalf("png missing or empty: %v", err)
	}
	if r, ok := rep.Find("etcd", "SET", 0); !ok || r.OpsPerS != 8000 {
		t.Fatal("Find")
	}
	if tab := rep.Table(); !strings.Contains(tab, "sdnkvs-node1") || !strings.Contains(tab, "17000") {
		t.Fatalf("table:\n%s", tab)
	}
}

func TestConfigErrors(t *testing.T) {
	c, err := Config{Bin: "/x"}.withDefaults()
	if err != nil || c.Nodes != 9 || c.Quorum != 5 || c.Out != "bench-out" {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	for name, bad := range map[string]Config{
		"quorum too small": {Bin: "/x", Nodes: 9, Quorum: 4},
		"quorum too big":   {Bin: "/x", Nodes: 3, Quorum: 4},
		"clients":          {Bin: "/x", Clients: -1},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestRunSmall runs the comparison for real, briefly (no etcd): every
// sdnkvs and redis-server test yields a rate, and every process its RSS.
func TestRunSmall(t *testing.T) {
	testenv.RequireCommand(t, "redis-benchmark", "redis-server")
	bin := testbedtest.BuildForTest(t)
	out := t.TempDir()
	rep, err := Run(context.Background(), Config{Bin: bin, Nodes: 3, Quorum: 2, Clients: 4, Requests: 500, Pipeline: 4, EtcdBin: "", Out: out})
	if err != nil {
		t.Fatal(err)
	}
	for _, sys := range []string{"sdnkvs", "redis-server"} {
		for _, test := range []string{"SET", "GET"} {
			for _, pipe := range []int{1, 4} {
				if r, ok := rep.Find(sys, test, pipe); !ok || r.OpsPerS <= 0 {
					t.Errorf("%s %s -P %d: %+v, found %v", sys, test, pipe, r, ok)
				}
			}
		}
	}
	if len(rep.RSS) != 4 || rep.RSS[0].PeakMiB <= 0 {
		t.Errorf("RSS: %+v, want 3 nodes and redis-server with a peak", rep.RSS)
	}
	if _, err := os.Stat(filepath.Join(out, "kvs.png")); err != nil {
		t.Error(err)
	}
}
