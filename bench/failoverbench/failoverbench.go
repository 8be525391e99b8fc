//go:build linux

// Package failoverbench is the paper's Fig. 6 experiment and more: an
// anycast client reading over one connection, request after request,
// across a cut of the near DC; RTT and throughput over time; the recovery
// time (RTO) measured for each failure detector of the middlebox in the
// same run, one middlebox run per detector on the same testbed.
//
//	for each detector (paper, fast):
//	  middlebox --detector D ── client: MGET marker,key on VIP:6380, the next
//	                            one when a reply is complete, and a PING every
//	                            50 ms on the same connection
//	  cut the near DC at CutAt, run until Duration, stop, heal
//	detected = cut -> the middlebox's first NodeDown of a near node
//	RTO      = cut -> first reply byte from the far DC (service resumed)
//	RTO full = cut -> first complete value from the far DC
//
// The PINGs keep client data in flight while replies flow, as the paper's
// client did: after a cut the client's kernel retransmits them, which is
// what the paper's Algorithm 1 counts (duplicate client segments). With
// ClientRTOMin the client namespace's routes get that rto_min, so the
// retransmission backoff (and so Algorithm 1's detection time) of hosts
// with a larger RTO floor can be reproduced.
//
// With Cuts > 0 it also cuts the near DC Cuts times at random moments under
// forked write load (fast detector), heals and readmits it in between, and
// checks every acknowledged write against the far DC (RPO).
package failoverbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/failover"
)

// Config configures the experiment. Zero values take the defaults shown.
type Config struct {
	Bin string // sdnkvs executable (required)
	// Topology is the near and the far DC (default: scenario.DefaultDCs).
	scenario.Topology

	Detectors     []string      // middlebox --detector values, one run each: paper, fast
	MiddleboxArgs []string      // more middlebox flags for every run
	CutAt         time.Duration // cut time in each run: 5s
	Duration      time.Duration // each run: 40s
	// ReadSize is the size of the value the reader fetches again and again
	// (stored directly in every DC before the runs): 64 KiB.
	ReadSize int
	// Until makes a run end early this long after the first reply from
	// the far DC (0: 5s; negative: run the full Duration).
	Until time.Duration
	// PingEvery is how often the reader also sends a PING on its
	// connection, so client data is in flight while replies flow (0: 50ms;
	// negative: never, the reader only sends its next request).
	PingEvery time.Duration
	// ClientRTOMin, if positive, is set as rto_min on the client
	// namespace's routes (Linux default 200ms): the paper's hosts
	// backed off from a larger RTO floor. 0: the kernel default.
	ClientRTOMin time.Duration

	Cuts        int     // repeated cuts under write load for RPO (0: none)
	CutsRate    float64 // writes per second during the cuts: 1000
	CutsWriters int     // write connections during the cuts: 4

	DataDir string    // store data ("": temporary)
	Out     string    // CSV and PNG directory ("": none)
	Log     io.Writer // progress (nil: discarded)
	Seed    uint64    // random cut times (0: time-based)
}

func (c Config) withDefaults() (Config, error) {
	if c.Bin == "" {
		return c, errors.New("failoverbench: no sdnkvs binary")
	}
	var err error
	if c.Topology, err = c.Topology.WithDefaults(); err != nil {
		return c, fmt.Errorf("failoverbench: %w", err)
	}
	if len(c.Detectors) == 0 {
		c.Detectors = []string{"paper", "fast"}
	}
	for _, det := range c.Detectors {
		if _, err := failover.ParseMode(det); err != nil {
			return c, fmt.Errorf("failoverbench: %w", err)
		}
	}
	if c.CutAt == 0 {
		c.CutAt = 5 * time.Second
	}
	if c.Duration == 0 {
		c.Duration = 40 * time.Second
	}
	if c.CutAt <= 0 || c.CutAt >= c.Duration {
		return c, fmt.Errorf("failoverbench: cut at %v: want within the run (0, %v)", c.CutAt, c.Duration)
	}
	if c.ReadSize == 0 {
		c.ReadSize = 64 << 10
	}
	if c.ReadSize < 1 || c.ReadSize > 1<<20 {
		return c, fmt.Errorf("failoverbench: read size %d: want 1..1048576", c.ReadSize)
	}
	if c.Until == 0 {
		c.Until = 5 * time.Second
	}
	if c.PingEvery == 0 {
		c.PingEvery = 50 * time.Millisecond
	}
	if c.PingEvery > 0 && c.PingEvery < time.Millisecond {
		return c, fmt.Errorf("failoverbench: ping every %v: want at least 1ms (negative: no pings)", c.PingEvery)
	}
	if c.ClientRTOMin < 0 || c.ClientRTOMin > time.Minute {
		return c, fmt.Errorf("failoverbench: client rto_min %v: want 0 (kernel default) to 1m", c.ClientRTOMin)
	}
	if c.ClientRTOMin > 0 && c.ClientRTOMin < time.Millisecond {
		return c, fmt.Errorf("failoverbench: client rto_min %v: want at least 1ms", c.ClientRTOMin)
	}
	if c.Cuts < 0 || c.Cuts > 1000 {
		return c, fmt.Errorf("failoverbench: cuts = %d: want 0..1000", c.Cuts)
	}
	if c.CutsRate == 0 {
		c.CutsRate = 1000
	}
	if c.CutsWriters == 0 {
		c.CutsWriters = 4
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	return c, nil
}

// Sample is one answered command.
type Sample struct {
	Kind string // KindMGET or KindPING
	// Sent, First and Done are since the run's start: command written,
	// first byte of its reply received, reply complete.
	Sent, First, Done time.Duration
	DC                string // which DC answered (the connection's marker)
	Bytes             int    // value bytes received (MGET)
	Conn              int    // connection number in the run, from 0
}

// RTT is the command's round-trip time (to the end of its reply).
func (s Sample) RTT() time.Duration { return s.Done - s.Sent }

// DetectorRun is one middlebox run across one cut. Durations named "cut
// -> ..." are -1 when the event did not happen.
type DetectorRun struct {
	Detector string
	CutAt    time.Duration
	End      time.Duration
	// RTO is cut -> the first reply byte from the far DC (service
	// resumed).
	RTO time.Duration
	// RTOFull is cut -> the first complete value from the far DC.
	RTOFull time.Duration
	// FirstReply is cut -> the first reply byte to a command sent after
	// the cut (any DC).
	FirstReply time.Duration
	// ConnLost is cut -> the reader's connection failed (the RST, or an
	// error) after the cut.
	ConnLost    time.Duration
	Resets      int // connections that ended with a RST or EOF
	Reconnects  int
	NearRTT     time.Duration // median MGET RTT before the cut
	FarRTT      time.Duration // median MGET RTT after recovery
	Samples     []Sample
	RxBins      []int64 // bytes received per 100 ms since the start
	MiddleboxRS float64 // the middlebox's RST counter at the end, -1 if unknown
	// NodeDown and DCDown are cut -> the middlebox's first NodeDown of a
	// near node (detection) and its DCDown of the near DC, from /dcs.
	NodeDown, DCDown time.Duration
	// Transitions are the middlebox's decisions ("+0.45s NodeDown node
	// (signal): cause", time from the cut).
	Transitions []string
	// Errors are the reader's first distinct errors other than resets.
	Errors []string
}

// CutRun is one cut of the repeated-cuts RPO experiment.
type CutRun struct {
	N           int
	At          time.Duration // since the workload started
	RTOWrite    time.Duration // -1: writes did not resume
	Readmitted  time.Duration // heal -> near DC live again in /dcs; -1: not seen
	WriteResets int64         // write connections reset during this cut
	// Transitions are the middlebox's failover decisions from the cut to
	// the readmission ("+0.45s NodeDown node (signal): cause", time from
	// the cut).
	Transitions []string
}

// Result is the whole experiment.
type Result struct {
	// ClientRTOMin is the rto_min set on the client's routes (0: kernel
	// default); PingEvery the reader's PING interval (negative: none).
	ClientRTOMin, PingEvery time.Duration
	Runs                    []DetectorRun
	Cuts                    []CutRun
	AckedWrites             int
	RPOLost                 int
	Files                   []string
}

// Run builds the environment once and runs every detector, then the
// repeated cuts; it tears everything down at the end, on error, or when
// ctx is cancelled.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	setup, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	env, err := scenario.NewEnv(setup, scenario.EnvConfig{Bin: cfg.Bin, Name: cfg.Name, DCs: cfg.DCs, DataDir: cfg.DataDir, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	val := make([]byte, cfg.ReadSize)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	for _, d := range cfg.DCs {
		c, err := env.DialDC(setup, d.Name, 0)
		if err != nil {
			return nil, err
		}
		rep, err := c.Do(setup, []byte("SET"), []byte(readKey), val)
		c.Close()
		if err != nil || !rep.IsOK() {
			return nil, fmt.Errorf("failoverbench: store the read value in %s: %v %q", d.Name, err, rep.Str)
		}
	}
	if cfg.ClientRTOMin > 0 {
		if err := setClientRTOMin(setup, env.TB, cfg.ClientRTOMin); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Log, "client routes: rto_min %v\n", cfg.ClientRTOMin)
	}
	res := &Result{ClientRTOMin: cfg.ClientRTOMin, PingEvery: cfg.PingEvery}
	for _, det := range cfg.Detectors {
		r, err := runDetector(ctx, env, cfg, det)
		if err != nil {
			return res, fmt.Errorf("detector %s: %w", det, err)
		}
		res.Runs = append(res.Runs, r)
	}
	if cfg.Cuts > 0 {
		if err := runCuts(ctx, env, cfg, res); err != nil {
			return res, err
		}
	}
	if cfg.Out != "" {
		files, err := writeFiles(cfg.Out, res)
		res.Files = files
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// setClientRTOMin sets rto_min d on the client namespace's default route
// and its on-link subnet route, and checks that both carry it. Sockets
// connected afterwards back off from that floor.
func setClientRTOMin(ctx context.Context, tb *testbed.Testbed, d time.Duration) error {
	rto := fmt.Sprintf("%dms", d.Milliseconds())
	gw := testbed.GatewayClientAddr
	subnet := netip.PrefixFrom(testbed.ClientAddr, 24).Masked()
	for _, argv := range [][]string{
		{"ip", "route", "change", "default", "via", gw.String(), "dev", "eth0", "rto_min", rto},
		{"ip", "route", "change", subnet.String(), "dev", "eth0", "proto", "kernel", "scope", "link", "src", testbed.ClientAddr.String(), "rto_min", rto},
	} {
		if out, err := tb.Exec(ctx, "client", argv...); err != nil {
			return fmt.Errorf("failoverbench: set client rto_min: %s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
		}
	}
	out, err := tb.Exec(ctx, "client", "ip", "-4", "route", "show")
	if err != nil {
		return fmt.Errorf("failoverbench: client routes: %w: %s", err, bytes.TrimSpace(out))
	}
	for _, want := range []string{"default", subnet.String()} {
		ok := false
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, want+" ") && strings.Contains(line, "rto_min") {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("failoverbench: client route %s has no rto_min after the change:\n%s", want, out)
		}
	}
	return nil
}

// runDetector runs one middlebox with detector det across one cut.
func runDetector(ctx context.Context, env *scenario.Env, cfg Config, det string) (DetectorRun, error) {
	r := DetectorRun{Detector: det, RTO: -1, RTOFull: -1, FirstReply: -1, ConnLost: -1, MiddleboxRS: -1, NodeDown: -1, DCDown: -1}
	if err := env.StartMiddlebox(ctx, scenario.MB{Detector: det, Extra: cfg.MiddleboxArgs, AnycastOnly: true}); err != nil {
		return r, err
	}
	defer func() {
		env.StopMiddlebox()
		env.TB.Heal(cfg.Near())
	}()
	pings := "no PINGs"
	if cfg.PingEvery > 0 {
		pings = fmt.Sprintf("a PING every %v", cfg.PingEvery)
	}
	fmt.Fprintf(cfg.Log, "detector %s: reading over one anycast connection (%s), %s cut at %v\n", det, pings, cfg.Near(), cfg.CutAt)
	start := time.Now()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	type out struct {
		samples []Sample
		st      readStats
	}
	done := make(chan out, 1)
	var pr progress
	bins := make([]int64, int((cfg.Duration+10*time.Second)/binWidth))
	go func() {
		var o out
		o.samples, o.st = readLoop(rctx, env, start, cfg.PingEvery, &pr, bins)
		done <- o
	}()

	cutT := time.NewTimer(cfg.CutAt)
	defer cutT.Stop()
	endT := time.NewTimer(cfg.Duration)
	defer endT.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var cut time.Duration
	var lastNote time.Duration
wait:
	for {
		select {
		case <-ctx.Done():
			stop()
			<-done
			return r, ctx.Err()
		case <-cutT.C:
			if err := env.TB.Cut(cfg.Near()); err != nil {
				stop()
				<-done
				return r, err
			}
			cut = time.Since(start)
			fmt.Fprintf(cfg.Log, "  %s cut at %.2fs\n", cfg.Near(), cut.Seconds())
		case <-endT.C:
			break wait
		case <-tick.C:
			if fa := pr.farAt.Load(); cut > 0 && cfg.Until > 0 && fa > int64(cut) && time.Since(start) > time.Duration(fa)+cfg.Until {
				break wait
			}
			if el := time.Since(start); el-lastNote >= 5*time.Second {
				lastNote = el
				fmt.Fprintf(cfg.Log, "  t=%.0fs replies %d\n", el.Seconds(), pr.replies.Load())
			}
		}
	}
	if v, ok, err := env.Metric("sdnkvs_middlebox_failover_rst_total"); err == nil && ok {
		r.MiddleboxRS = v
	}
	if trans, err := env.Transitions(); err == nil && cut > 0 {
		cutWall := start.Add(cut)
		for _, t := range trans {
			d := t.At.Sub(cutWall)
			if d < -time.Second {
				continue
			}
			r.Transitions = append(r.Transitions, fmt.Sprintf("%+.2fs %s %s %s (%s): %s", d.Seconds(), t.DC, t.Kind, t.Node, t.Signal, t.Cause))
			if d < 0 {
				continue
			}
			if t.Kind == "NodeDown" && t.DC == cfg.Near() && r.NodeDown < 0 {
				r.NodeDown = d
			}
			if t.Kind == "DCDown" && t.DC == cfg.Near() && r.DCDown < 0 {
				r.DCDown = d
			}
		}
	}
	stop()
	o := <-done
	r.End = time.Since(start)
	r.CutAt, r.Samples, r.Resets, r.Reconnects, r.Errors = cut, o.samples, o.st.resets, o.st.reconnects, o.st.errs
	r.RxBins = bins[:min(len(bins), int(r.End/binWidth)+1)]
	if cut > 0 {
		r.summarize(cfg.Far(), o.st.lost)
	}
	fmt.Fprintf(cfg.Log, "  detector %s: detected after %s (DC down %s), connection lost after %s, RTO %s (first far reply byte; complete value %s), %d resets\n",
		det, fmtDur(r.NodeDown), fmtDur(r.DCDown), fmtDur(r.ConnLost), fmtDur(r.RTO), fmtDur(r.RTOFull), r.Resets)
	if len(r.Transitions) > 0 {
		fmt.Fprintf(cfg.Log, "  middlebox decisions (from the cut):\n    %s\n", strings.Join(r.Transitions, "\n    "))
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(cfg.Log, "  reader errors:\n    %s\n", strings.Join(r.Errors, "\n    "))
	}
	return r, nil
}

// summarize computes the run's times from its samples and the moments
// its connections were lost; r.CutAt must be set.
func (r *DetectorRun) summarize(far string, lost []time.Duration) {
	cut := r.CutAt
	for _, l := range lost {
		if l >= cut {
			r.ConnLost = l - cut
			break
		}
	}
	var before, after []time.Duration
	for _, s := range r.Samples {
		if s.Kind == KindMGET && s.Done < cut {
			before = append(before, s.RTT())
		}
		if s.Sent < cut {
			continue
		}
		if r.FirstReply < 0 || s.First-cut < r.FirstReply {
			r.FirstReply = s.First - cut
		}
		if s.DC != far {
			continue
		}
		if r.RTO < 0 || s.First-cut < r.RTO {
			r.RTO = s.First - cut
		}
		if s.Kind == KindMGET {
			if r.RTOFull < 0 || s.Done-cut < r.RTOFull {
				r.RTOFull = s.Done - cut
			}
			after = append(after, s.RTT())
		}
	}
	r.NearRTT, r.FarRTT = median(before), median(after)
}

// readKey holds the value the Fig. 6 reader fetches.
const readKey = "failoverbench:value"
