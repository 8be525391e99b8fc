//go:build linux

// Package goodput is the paper's Fig. 7 benchmark: the goodput of one client
// whose single TCP connection is forked by the middlebox to N servers, one in
// each of N DCs, for N = 1..6; and, in the same run, a direct single-server
// connection that bypasses the middlebox as the baseline.
//
//	forked: client ─veth─ gw ⇄ TUN ⇄ sdnkvs middlebox ─┬─ link 1 ─ dc1 sink 10.210.1.11:6379
//	        (VIP 10.200.100.1:6379, multicast)          ├─ link 2 ─ dc2 sink 10.210.2.11:6379
//	                                                    └─ ...    ─ dcN sink 10.210.N.11:6379
//	direct: client ─veth─ gw (kernel routing) ─ link 1 ─ dc1 sink 10.210.1.11:5201
//
// Each DC link is a veth pair (unthrottled) or the testbed's user-space WAN
// emulator (with a rate or an RTT). The sender is a Go TCP client in the
// client namespace writing as fast as the connection takes; each sink is a
// Go TCP server in its DC namespace that reads and counts. Goodput is the
// byte count that every server has received (the minimum over servers),
// sampled every 100 ms; the client's own acknowledged byte count (TCP_INFO
// bytes_acked, which the middlebox only advances once every branch has
// acknowledged) is recorded next to it as a cross-check.
//
// The direct baselines target a port the middlebox does not own, so they
// are plain kernel forwarding over the same kind of link: once as the
// client's TCP is configured, once with SACK and timestamps off (the
// options the middlebox strips from forked handshakes). Results are
// per-server goodput, cumulated goodput (N x per-server), and ratios to
// N x the link rate and to the direct baseline.
//
// Without SACK, a burst of drop-tail losses at an emulated link's queue
// (slow-start overshoot under the kernel's receive-window autotuning) is
// recovered one segment per round trip, so throughput on rate-limited
// links swings from run to run for forked and no-SACK direct streams
// alike. Config.RcvBuf caps the receive window (set it near twice the
// bandwidth-delay product) so that the sender never overflows the queue.
package goodput

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// Ports used by the benchmark.
const (
	MulticastPort = testbed.DefaultNodePort // VIP multicast port; every node's sink listens on it
	DirectPort    = 5201                    // dc1's sink for the direct baseline (not a VIP port)
)

// MaxServers is the largest N (the testbed gives each DC a /24 of its own;
// the middlebox forks to at most 8 branches).
const MaxServers = 8

// Config configures a run. Zero values take the defaults shown.
type Config struct {
	// Bin is the sdnkvs binary whose middlebox is measured (required).
	Bin string
	// Servers lists the N to measure, in order (default 1..6).
	Servers []int
	// Rate caps each DC link, bits per second of IP packets (0: unlimited).
	Rate uint64
	// RTT is the client-server round trip added by each DC link (0: none).
	// With neither Rate nor RTT the links are veth pairs.
	RTT time.Duration
	// Duration of each measured stream (default 10 s).
	Duration time.Duration
	// Warmup is excluded from the steady-state goodput (default: 1 s, or a
	// fifth of Duration when that is shorter).
	Warmup time.Duration
	// Interval between samples (default 100 ms).
	Interval time.Duration
	// TunMode is the middlebox's --tun-mode ("" : its default).
	TunMode string
	// MiddleboxArgs are extra middlebox flags (e.g. --sack).
	MiddleboxArgs []string
	// RTPriority, when positive, runs the middlebox under SCHED_FIFO at
	// this priority (chrt -f). The WAN emulator's threads run at FIFO 10
	// in this process, so under load they can starve a normal-priority
	// middlebox; 0 leaves it at normal priority.
	RTPriority int
	// NoDirect skips the direct single-stream baselines.
	NoDirect bool
	// NoParallel skips, for each N > 1, the N independent direct streams
	// (one per DC, no middlebox) measured at once as the reference for the
	// forked connection.
	NoParallel bool
	// RcvBuf, when positive, is each sink's SO_RCVBUF (the kernel doubles
	// it), which caps the receive window; 0 leaves the kernel's
	// autotuning.
	RcvBuf int
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// withDefaults fills in zero fields and validates c.
func (c Config) withDefaults() (Config, error) {
	if c.Bin == "" {
		return c, errors.New("goodput: no sdnkvs binary given")
	}
	if len(c.Servers) == 0 {
		c.Servers = []int{1, 2, 3, 4, 5, 6}
	}
	for _, n := range c.Servers {
		if n < 1 || n > MaxServers {
			return c, fmt.Errorf("goodput: %d servers: want 1..%d", n, MaxServers)
		}
	}
	if c.RTT < 0 {
		return c, fmt.Errorf("goodput: negative RTT %v", c.RTT)
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = min(time.Second, c.Duration/5)
	}
	if c.Warmup >= c.Duration {
		return c, fmt.Errorf("goodput: warm-up %v is not shorter than the duration %v", c.Warmup, c.Duration)
	}
	if c.Interval <= 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c, nil
}

// Sample is the state of one stream at one instant.
type Sample struct {
	T           time.Duration // since the connection was established
	Servers     []int64       // bytes each server has received
	ClientAcked int64         // the client's acknowledged payload bytes (TCP_INFO); -1: unknown
}

// Min returns the bytes every server has received.
func (s Sample) Min() int64 { return slices.Min(s.Servers) }

// Result is one measured stream.
type Result struct {
	// Kind is "forked" (through the VIP to N servers), "direct",
	// "direct-nosack" or "direct-parallel" (see Run).
	Kind string
	N    int
	// Sent is the number of bytes the client wrote; Received what each
	// server read in total before the client's FIN.
	Sent     int64
	Received []int64
	// Samples are taken every Interval while the client writes.
	Samples []Sample
	// Mbps is the steady-state goodput of each server (bytes every server
	// has received, after the warm-up), in Mbit/s.
	Mbps float64
	// ClientMbps is the same from the client's acknowledged bytes.
	ClientMbps float64
	// Parts are the streams of a "direct-parallel" result.
	Parts []Result
	// Drops counts packets dropped during the stream on the DC links, both
	// ways (the WAN emulator's queue and random loss, the interfaces'
	// transmit drops: a TUN whose reader fell behind) and on the way into
	// the middlebox's TUN; -1: unknown.
	Drops      int64
	DropCounts testbed.DropCounts
}

// Complete reports whether every server received exactly what was sent.
func (r Result) Complete() bool {
	if len(r.Parts) > 0 {
		for _, p := range r.Parts {
			if !p.Complete() {
				return false
			}
		}
		return true
	}
	if len(r.Received) != r.N || r.Sent <= 0 {
		return false
	}
	for _, v := range r.Received {
		if v != r.Sent {
			return false
		}
	}
	return true
}

// Run measures every N of cfg.Servers (and the direct baselines, on the
// first topology) and returns the results in order, baselines first.
//
// There are two direct baselines: "direct", the client's TCP as
// configured, and "direct-nosack", the same with SACK and timestamps
// turned off in the client's namespace, since the middlebox strips both
// from forked connections' handshakes (docs/design.md section 4): it shows what
// TCP itself achieves on the link without them. For each N > 1 there is
// also "direct-parallel": N independent direct streams at once, one per DC
// (see parallel).
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var out []Result
	for i, n := range cfg.Servers {
		rs, err := runN(ctx, cfg, n, i == 0 && !cfg.NoDirect)
		out = append(out, rs...)
		if err != nil {
			return out, fmt.Errorf("goodput: %d servers: %w", n, err)
		}
	}
	return out, nil
}

func dcName(k int) string { return fmt.Sprintf("dc%d", k) }

// runN builds an N-DC topology, starts the sinks and the middlebox, and
// measures the direct baseline (when asked) then the forked stream.
func runN(ctx context.Context, cfg Config, n int, direct bool) ([]Result, error) {
	tc := testbed.Config{}
	for k := 1; k <= n; k++ {
		tc.DCs = append(tc.DCs, testbed.DC{Name: dcName(k), Nodes: 1, Delay: cfg.RTT / 2, Rate: cfg.Rate})
	}
	tb, err := testbed.Up(tc)
	if err != nil {
		return nil, err
	}
	defer tb.Close()

	sinks := make([]*Sink, n)
	for k := 1; k <= n; k++ {
		s, err := ListenSink(tb.NS(dcName(k)), netip.AddrPortFrom(testbed.NodeAddr(k, 0), MulticastPort), cfg.RcvBuf)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		sinks[k-1] = s
	}
	var out []Result
	if direct {
		ds, err := ListenSink(tb.NS(dcName(1)), netip.AddrPortFrom(testbed.NodeAddr(1, 0), DirectPort), cfg.RcvBuf)
		if err != nil {
			return nil, err
		}
		// Closed before the parallel streams, which listen on the same port.
		defer ds.Close()
		daddr := netip.AddrPortFrom(testbed.NodeAddr(1, 0), DirectPort)
		r, err := measure(tb, func() (Result, error) { return stream(ctx, cfg, tb, daddr, []*Sink{ds}) })
		r.Kind = "direct"
		if err != nil {
			return out, fmt.Errorf("direct baseline: %w", err)
		}
		fmt.Fprintf(cfg.Log, "direct (no middlebox): %.1f Mbit/s; drops: %v\n", r.Mbps, r.DropCounts)
		out = append(out, r)

		restore, err := clientSysctls(tb, map[string]string{"net/ipv4/tcp_sack": "0", "net/ipv4/tcp_timestamps": "0"})
		if err != nil {
			return out, err
		}
		r, err = measure(tb, func() (Result, error) { return stream(ctx, cfg, tb, daddr, []*Sink{ds}) })
		r.Kind = "direct-nosack"
		if rerr := restore(); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			return out, fmt.Errorf("direct baseline without SACK: %w", err)
		}
		fmt.Fprintf(cfg.Log, "direct, SACK and timestamps off: %.1f Mbit/s; drops: %v\n", r.Mbps, r.DropCounts)
		out = append(out, r)
		if err := ds.Close(); err != nil {
			return out, err
		}
	}
	if n > 1 && !cfg.NoParallel {
		r, err := measure(tb, func() (Result, error) { return parallel(ctx, cfg, tb, n) })
		if err != nil {
			return out, fmt.Errorf("parallel direct streams: %w", err)
		}
		fmt.Fprintf(cfg.Log, "%d parallel direct streams: %.1f Mbit/s each on average, %.1f cumulated; drops: %v\n",
			n, r.Mbps, float64(n)*r.Mbps, r.DropCounts)
		out = append(out, r)
	}
	if err := startMiddlebox(ctx, cfg, tb); err != nil {
		return out, err
	}
	r, err := measure(tb, func() (Result, error) {
		return stream(ctx, cfg, tb, netip.AddrPortFrom(testbed.VIP, MulticastPort), sinks)
	})
	r.Kind = "forked"
	if err != nil {
		return out, fmt.Errorf("forked stream: %w", err)
	}
	fmt.Fprintf(cfg.Log, "forked to %d servers: %.1f Mbit/s per server, %.1f cumulated (client acked %.1f); drops: %v\n",
		n, r.Mbps, float64(n)*r.Mbps, r.ClientMbps, r.DropCounts)
	out = append(out, r)
	return out, nil
}

// startMiddlebox starts the middlebox in the gateway namespace (under
// SCHED_FIFO with cfg.RTPriority, through chrt) and waits until its control
// endpoint answers.
func startMiddlebox(ctx context.Context, cfg Config, tb *testbed.Testbed) error {
	opts := testbed.MiddleboxOptions{
		Bin: cfg.Bin, TunMode: cfg.TunMode, Multicast: []uint16{MulticastPort}, NodePort: MulticastPort,
		Control: testbed.DefaultControl,
		// The nodes serve no /ready to probe; later flags may override.
		Extra: append([]string{"--detector", "none"}, cfg.MiddleboxArgs...),
	}
	args := tb.MiddleboxArgs(opts)
	if cfg.RTPriority > 0 {
		args = append([]string{"chrt", "-f", strconv.Itoa(cfg.RTPriority)}, args...)
	}
	p, err := tb.Start("gw", args)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := tb.WaitHTTP(sctx, "gw", "http://"+opts.Control+"/dcs", p); err != nil {
		p.Stop(2 * time.Second)
		return fmt.Errorf("middlebox not ready: %w", err)
	}
	return nil
}

// parallel runs n independent direct streams at once, client to node 0
// of each DC on DirectPort (no middlebox): what the links, the emulator
// and this machine carry for n connections, the fair reference for a
// connection forked n ways. The result's Mbps is the mean per stream;
// its samples hold every stream's received bytes (no client acked count).
func parallel(ctx context.Context, cfg Config, tb *testbed.Testbed, n int) (Result, error) {
	res := Result{Kind: "direct-parallel", N: n}
	parts := make([]Result, n)
	errs := make([]error, n)
	sinks := make([]*Sink, n)
	for k := 1; k <= n; k++ {
		s, err := ListenSink(tb.NS(dcName(k)), netip.AddrPortFrom(testbed.NodeAddr(k, 0), DirectPort), cfg.RcvBuf)
		if err != nil {
			return res, err
		}
		defer s.Close()
		sinks[k-1] = s
	}
	var wg sync.WaitGroup
	for k := 1; k <= n; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := netip.AddrPortFrom(testbed.NodeAddr(k, 0), DirectPort)
			parts[k-1], errs[k-1] = stream(ctx, cfg, tb, addr, sinks[k-1:k])
		}()
	}
	// One sampler for all the streams, so their samples line up.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	start := time.Now()
	sample := func() Sample {
		sm := Sample{T: time.Since(start), ClientAcked: -1}
		for _, s := range sinks {
			sm.Servers = append(sm.Servers, s.Bytes())
		}
		return sm
	}
	res.Samples = append(res.Samples, sample())
	tick := time.NewTicker(cfg.Interval)
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-tick.C:
			// Stop sampling when the writers stop (the sinks then drain).
			if time.Since(start) <= cfg.Duration+cfg.Interval/2 {
				res.Samples = append(res.Samples, sample())
			}
		}
	}
	tick.Stop()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	res.Parts = parts
	for _, p := range parts {
		res.Mbps += p.Mbps / float64(n)
		res.ClientMbps += p.ClientMbps / float64(n)
		res.Sent += p.Sent
		res.Received = append(res.Received, p.Received[0])
	}
	return res, nil
}
