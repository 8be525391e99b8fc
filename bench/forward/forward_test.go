//go:build linux

package forward

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestSummarizeAndReport(t *testing.T) {
	rs := []Result{
		{Mode: "kernel", Topo: "offload", Run: 1, Gbps: 10},
		{Mode: "offload", Topo: "offload", Run: 1, Gbps: 6},
		{Mode: "kernel", Topo: "plain", Run: 1, Gbps: 8},
		{Mode: "plain", Topo: "plain", Run: 1, Gbps: 1},
	}
	sum := Summarize(rs)
	if len(sum) != 3 || sum[0].Mode != "kernel" || sum[0].Gbps != 9 || sum[1].Ratio != 0.6 || sum[2].Ratio != 0.125 {
		t.Fatalf("summary %+v", sum)
	}
	dir := t.TempDir()
	var b bytes.Buffer
	if err := Report(&b, rs, dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "offload  6.000") {
		t.Fatalf("table:\n%s", b.String())
	}
	tab, err := report.ReadCSV(filepath.Join(dir, "forward.csv"))
	if err != nil || len(tab.Rows) != 4 {
		t.Fatalf("csv: %+v %v", tab, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "forward.png")); err != nil {
		t.Fatal(err)
	}
}

// TestKernelForwarding runs the kernel half for real: iperf3 from the
// client namespace to a DC node through the gateway.
func TestKernelForwarding(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "iperf3")
	rs, err := Run(context.Background(), Config{Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Mode != "kernel" || rs[0].Gbps <= 0 {
		t.Fatalf("results %+v", rs)
	}
	t.Logf("kernel forwarding: %.2f Gbit/s", rs[0].Gbps)
}

// TestMiddleboxModes runs the whole benchmark briefly through the real
// middlebox.
func TestMiddleboxModes(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "iperf3")
	bin := testbedtest.BuildForTest(t)
	var log bytes.Buffer
	rs, err := Run(context.Background(), Config{Bin: bin, Modes: []string{"offload", "plain"}, Duration: 2 * time.Second, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	sum := Summarize(rs)
	var b bytes.Buffer
	Report(&b, rs, t.TempDir())
	t.Logf("\n%s", b.String())
	if len(sum) != 3 {
		t.Fatalf("summary %+v", sum)
	}
	for _, s := range sum {
		if s.Gbps <= 0 || s.Ratio <= 0 {
			t.Errorf("%s: %.3f Gbit/s ratio %.3f", s.Mode, s.Gbps, s.Ratio)
		}
	}
}
