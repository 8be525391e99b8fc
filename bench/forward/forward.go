//go:build linux

// Package forward is the forwarding benchmark: single-stream TCP
// throughput (iperf3) from the client namespace to a DC node through the
// middlebox's anycast VIP port, side by side with plain kernel forwarding
// on the same topology in the same run, for each TUN mode of the middlebox.
//
//	kernel:   client ──veth── gw (kernel routing) ──veth── node 10.210.1.11:5201
//	offload:  client ──veth── gw ⇄ TUN ⇄ sdnkvs middlebox ──veth── node :6380
//	          (VIP 10.200.100.1:6380, anycast)
//
// The kernel baseline targets a port that is not a VIP service port, so the
// node's replies do not match the middlebox's policy rules. Each mode gets a
// fresh topology (veth links, no delay); kernel and middlebox runs alternate
// within it. Results are ratios to the kernel runs of the same topology.
package forward

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// Ports used by the benchmark.
const (
	KernelPort  = 5201 // iperf3 on the node, reached directly (no VIP)
	AnycastPort = 6380 // VIP anycast port, mapped to the node's same port
)

// Config configures a run.
type Config struct {
	// Bin is the sdnkvs binary whose middlebox is measured; required
	// when Modes is not empty.
	Bin string
	// Modes are middlebox --tun-mode values ("offload", "plain"); empty
	// measures kernel forwarding only.
	Modes []string
	// Duration of each iperf3 run (after a 1 s omitted warm-up); default 10 s.
	Duration time.Duration
	// Repeat is the number of kernel/middlebox pairs per mode; default 1.
	Repeat int
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Result is one measurement.
type Result struct {
	Mode string  // "kernel", or the middlebox TUN mode
	Topo string  // which topology (mode) it ran on
	Run  int     // 1-based repetition
	Gbps float64 // iperf3 receiver throughput
}

// withDefaults fills in zero fields and validates c.
func (c Config) withDefaults() (Config, error) {
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Repeat <= 0 {
		c.Repeat = 1
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if len(c.Modes) > 0 && c.Bin == "" {
		return c, fmt.Errorf("forward: a middlebox mode needs the sdnkvs binary")
	}
	return c, nil
}

// Run measures and returns every result, kernel runs included.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	topos := cfg.Modes
	if len(topos) == 0 {
		topos = []string{"kernel"}
	}
	var out []Result
	for _, mode := range topos {
		rs, err := runMode(ctx, cfg, mode)
		out = append(out, rs...)
		if err != nil {
			return out, fmt.Errorf("mode %s: %w", mode, err)
		}
	}
	return out, nil
}

func runMode(ctx context.Context, cfg Config, mode string) ([]Result, error) {
	tb, err := testbed.Up(testbed.Config{DCs: []testbed.DC{{Name: "sydney", Nodes: 1}}})
	if err != nil {
		return nil, err
	}
	defer tb.Close()
	node := testbed.NodeAddr(1, 0)
	ports := []int{KernelPort}
	if mode != "kernel" {
		ports = append(ports, AnycastPort)
	}
	for _, p := range ports {
		if _, err := tb.Start("sydney", []string{"iperf3", "-s", "-B", node.String(), "-p", strconv.Itoa(p)}); err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := tb.WaitListening(wctx, "sydney", netip.AddrPortFrom(node, uint16(p)))
		cancel()
		if err != nil {
			return nil, err
		}
	}
	if mode != "kernel" {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := tb.StartMiddlebox(sctx, testbed.MiddleboxOptions{
			Bin: cfg.Bin, TunMode: mode, Anycast: []uint16{AnycastPort}, NodePort: AnycastPort,
			Extra: []string{"--detector", "none"}, // iperf3 nodes serve no /ready to probe
		})
		cancel()
		if err != nil {
			return nil, err
		}
	}
	var out []Result
	for r := 1; r <= cfg.Repeat; r++ {
		gbps, err := iperf(ctx, tb, node.String(), KernelPort, cfg.Duration)
		if err != nil {
			return out, fmt.Errorf("kernel run: %w", err)
		}
		fmt.Fprintf(cfg.Log, "%s topology, run %d: kernel forwarding %.2f Gbit/s\n", mode, r, gbps)
		out = append(out, Result{Mode: "kernel", Topo: mode, Run: r, Gbps: gbps})
		if mode == "kernel" {
			continue
		}
		gbps, err = iperf(ctx, tb, testbed.VIP.String(), AnycastPort, cfg.Duration)
		if err != nil {
			return out, fmt.Errorf("middlebox run: %w", err)
		}
		fmt.Fprintf(cfg.Log, "%s topology, run %d: middlebox (%s) %.2f Gbit/s\n", mode, r, mode, gbps)
		out = append(out, Result{Mode: mode, Topo: mode, Run: r, Gbps: gbps})
	}
	return out, nil
}

// iperf runs one single-stream iperf3 test from the client and returns the
// receiver's Gbit/s.
func iperf(ctx context.Context, tb *testbed.Testbed, addr string, port int, d time.Duration) (float64, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	out, err := tb.Exec(ctx, "client", "iperf3", "-c", addr, "-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-O", "1", "-J")
	if err != nil {
		if bps, perr := testbed.ParseIperfJSON(out); perr != nil && bps == 0 {
			return 0, fmt.Errorf("%v: %v", err, perr)
		}
		return 0, err
	}
	bps, err := testbed.ParseIperfJSON(out)
	return bps / 1e9, err
}

// Summary is one row of the summary table: a mode's median throughput and
// its ratio to the median kernel throughput measured on the same topology.
type Summary struct {
	Mode       string
	Gbps       float64
	KernelGbps float64
	Ratio      float64
	Runs       int
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Summarize reduces results to one row for kernel forwarding (all kernel
// runs) and one per middlebox mode.
func Summarize(rs []Result) []Summary {
	var all []float64
	byTopo := map[string][]float64{}
	byMode := map[string][]float64{}
	var modes []string
	for _, r := range rs {
		if r.Mode == "kernel" {
			all = append(all, r.Gbps)
			byTopo[r.Topo] = append(byTopo[r.Topo], r.Gbps)
			continue
		}
		if _, ok := byMode[r.Mode]; !ok {
			modes = append(modes, r.Mode)
		}
		byMode[r.Mode] = append(byMode[r.Mode], r.Gbps)
	}
	var out []Summary
	if len(all) > 0 {
		k := median(all)
		out = append(out, Summary{Mode: "kernel", Gbps: k, KernelGbps: k, Ratio: 1, Runs: len(all)})
	}
	for _, m := range modes {
		g := median(byMode[m])
		s := Summary{Mode: m, Gbps: g, Runs: len(byMode[m])}
		if k := byTopo[m]; len(k) > 0 {
			s.KernelGbps = median(k)
			s.Ratio = g / s.KernelGbps
		}
		out = append(out, s)
	}
	return out
}

// Report prints the summary table to w and writes forward.csv (every run),
// forward-summary.csv and forward.png (bar chart) into dir.
func Report(w io.Writer, rs []Result, dir string) error {
	sum := Summarize(rs)
	t := report.NewTable("mode", "Gbit/s", "kernel Gbit/s (same topology)", "ratio to kernel", "runs")
	for _, s := range sum {
		t.Add(s.Mode, s.Gbps, s.KernelGbps, s.Ratio, s.Runs)
	}
	if err := t.Fprint(w); err != nil {
		return err
	}
	if err := t.WriteCSV(filepath.Join(dir, "forward-summary.csv")); err != nil {
		return err
	}
	raw := report.NewTable("mode", "topology", "run", "gbit_per_s")
	for _, r := range rs {
		raw.Add(r.Mode, r.Topo, r.Run, r.Gbps)
	}
	if err := raw.WriteCSV(filepath.Join(dir, "forward.csv")); err != nil {
		return err
	}
	bp := report.BarPlot{Title: "Single-stream TCP through the gateway", YLabel: "Gbit/s"}
	for _, s := range sum {
		bp.Labels = append(bp.Labels, s.Mode)
		bp.Values = append(bp.Values, s.Gbps)
	}
	return bp.Save(filepath.Join(dir, "forward.png"))
}
