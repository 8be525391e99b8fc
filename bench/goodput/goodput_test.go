//go:build linux

package goodput

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func samples(n int, perServer ...[]int64) []Sample {
	var out []Sample
	for i := range perServer[0] {
		s := Sample{T: time.Duration(i) * time.Second, ClientAcked: perServer[0][i]}
		for _, p := range perServer {
			s.Servers = append(s.Servers, p[i])
		}
		out = append(out, s)
	}
	return out
}

// TestSteadyUsesMinimumAfterWarmup: the goodput is what every server got
// (the slowest), counted from the first sample past the warm-up.
func TestSteadyUsesMinimumAfterWarmup(t *testing.T) {
	ss := samples(2,
		[]int64{0, 5e6, 10e6, 15e6},
		[]int64{0, 1e6, 3.5e6, 6e6}, // slowest: 2.5 MB/s after warm-up
	)
	srv, cli := steady(ss, time.Second)
	if srv != 20 { // 2.5e6 B/s * 8 = 20 Mbit/s
		t.Fatalf("servers: %v Mbit/s, want 20", srv)
	}
	if cli != 40 {
		t.Fatalf("client: %v Mbit/s, want 40", cli)
	}
	if s, c := steady(ss[:1], 0); s != 0 || c != 0 {
		t.Fatalf("one sample: %v %v", s, c)
	}
}

func TestSummarizeAndReport(t *testing.T) {
	rs := []Result{
		{Kind: "direct", N: 1, Sent: 100, Received: []int64{100}, Mbps: 95, Samples: samples(1, []int64{0, 1, 2})},
		{Kind: "forked", N: 1, Sent: 100, Received: []int64{100}, Mbps: 94, Samples: samples(1, []int64{0, 1, 2})},
		{Kind: "forked", N: 3, Sent: 100, Received: []int64{100, 100, 99}, Mbps: 90, Samples: samples(3, []int64{0, 1, 2}, []int64{0, 1, 2}, []int64{0, 1, 1})},
		{Kind: "direct-parallel", N: 3, Mbps: 80, Parts: []Result{
			{N: 1, Sent: 5, Received: []int64{5}}, {N: 1, Sent: 6, Received: []int64{6}}, {N: 1, Sent: 7, Received: []int64{7}},
		}},
	}
	sum := Summarize(rs, 100e6)
	if len(sum) != 4 {
		t.Fatalf("summary %+v", sum)
	}
	if s := sum[2]; s.Cumulated != 270 || s.LinkRatio != 0.9 || s.Complete || s.DirectRatio != 90.0/95 || s.ParallelRatio != 270.0/240 {
		t.Fatalf("N=3 row %+v", s)
	}
	if s := sum[3]; !s.Complete || s.Cumulated != 240 || s.ParallelRatio != 0 {
		t.Fatalf("parallel row %+v", s)
	}
	if !sum[1].Complete || sum[1].LinkRatio != 0.94 {
		t.Fatalf("N=1 row %+v", sum[1])
	}
	dir := t.TempDir()
	var b bytes.Buffer
	if err := Report(&b, rs, 100e6, dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "270.000") || !strings.Contains(b.String(), "0.900") {
		t.Fatalf("table:\n%s", b.String())
	}
	raw, err := report.ReadCSV(filepath.Join(dir, "goodput.csv"))
	if err != nil || len(raw.Rows) != 9 {
		t.Fatalf("goodput.csv: %+v %v", raw, err)
	}
	// Last sample of N=3: the slowest server went 1 -> 1 byte: 0 goodput.
	if last := raw.Rows[8]; last[5] != "0.000" || last[7] != "2 2 1" {
		t.Fatalf("last row %v", last)
	}
	for _, f := range []string{"goodput-summary.csv", "goodput.png", "goodput-summary.png"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Bin: "x", Servers: []int{0}},
		{Bin: "x", Servers: []int{9}},
		{Bin: "x", RTT: -time.Second},
		{Bin: "x", Duration: time.Second, Warmup: 2 * time.Second},
		{Servers: []int{1}},
	} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}

// TestQuickGoodput runs the benchmark for real, briefly: N = 3 and 1 over
// veth links, 2 s each, with the direct baselines and 3 parallel direct
// streams. Every server must receive
// every byte the client sent, goodput must be nonzero, and the outputs
// must be written.
func TestQuickGoodput(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	bin := testbedtest.BuildForTest(t)
	before := runtime.NumGoroutine()
	var log bytes.Buffer
	// N=3 first: the direct baselines and the parallel streams share
	// that topology.
	rs, err := Run(context.Background(), Config{Bin: bin, Servers: []int{3, 1}, Duration: 2 * time.Second, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(rs) != 5 || rs[0].Kind != "direct" || rs[1].Kind != "direct-nosack" || rs[2].Kind != "direct-parallel" ||
		rs[2].N != 3 || len(rs[2].Parts) != 3 || rs[3].Kind != "forked" || rs[3].N != 3 || rs[4].Kind != "forked" || rs[4].N != 1 {
		t.Fatalf("results: %+v", rs)
	}
	for _, r := range rs {
		if !r.Complete() {
			t.Errorf("%s N=%d: sent %d, servers received %v", r.Kind, r.N, r.Sent, r.Received)
		}
		if r.Mbps <= 0 || r.ClientMbps <= 0 {
			t.Errorf("%s N=%d: goodput %v Mbit/s, client acked %v", r.Kind, r.N, r.Mbps, r.ClientMbps)
		}
		if len(r.Samples) < 10 {
			t.Errorf("%s N=%d: %d samples over 2 s", r.Kind, r.N, len(r.Samples))
		}
		// The client was never acknowledged more than it sent.
		last := r.Samples[len(r.Samples)-1]
		if last.ClientAcked > r.Sent {
			t.Errorf("%s N=%d: client acked %d > sent %d", r.Kind, r.N, last.ClientAcked, r.Sent)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "the run's goroutines to end", func() bool {
		return runtime.NumGoroutine() <= before
	})
	dir := t.TempDir()
	var b bytes.Buffer
	if err := Report(&b, rs, 0, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s%s", log.String(), b.String())
	sum, err := report.ReadCSV(filepath.Join(dir, "goodput-summary.csv"))
	if err != nil || len(sum.Rows) != 5 {
		t.Fatalf("summary CSV: %+v %v", sum, err)
	}
	for _, row := range sum.Rows {
		if v, err := strconv.ParseFloat(row[2], 64); err != nil || v <= 0 {
			t.Errorf("summary row %v: per-server goodput %q", row, row[2])
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "goodput.png")); err != nil {
		t.Fatal(err)
	}
}

func TestAutoRcvBuf(t *testing.T) {
	if got := AutoRcvBuf(0, 20*time.Millisecond); got != 0 {
		t.Errorf("unlimited link: %d, want 0 (autotuning)", got)
	}
	if got := AutoRcvBuf(100e6, 20*time.Millisecond); got != 550000 {
		t.Errorf("100 Mbit/s, 20 ms: %d, want 550000", got)
	}
	if got := AutoRcvBuf(10e6, 0); got != 128<<10 {
		t.Errorf("no delay: %d, want the 128 KiB floor", got)
	}
}
