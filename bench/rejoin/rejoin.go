//go:build linux

// Package rejoin is `sdnkvs bench rejoin` (issue 9): how fast a DC that
// missed writes catches up and rejoins, against the amount it missed, at
// the paper's topology, and what the catch-up costs live writes.
//
//	sequenced stores with catch-up (scenario.Sequencing Lifecycle), middlebox at the edge
//	probe: 4 closed-loop clients, one SET at a time each through VIP:6379
//	       (forked), a new connection every second, latency recorded throughout
//	for each case K x SIZE (same environment, one after the other):
//	  steady (both DCs live) ─► cut DC X ─► load K keys of SIZE bytes
//	  (MSET through VIP:6379: only the other DC gets them) ─► heal X ─►
//	  joining (catch-up from the live DC, progress from /dcs) ─► live ─► after
//
// It reports catch-up time (heal to live, heal to the first completed
// pass, and the time passes were running: the copy), keys/s, MB/s and the
// ratio to the link rate over heal to live and over the copy, and the
// probe's write latency p50/p99 before the cut (steady state: the
// baseline), during catch-up and after it.
package rejoin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// Case is one amount of missed data: Keys keys of ValueSize bytes.
type Case struct {
	Keys      int
	ValueSize int
}

func (c Case) String() string { return fmt.Sprintf("%dx%dB", c.Keys, c.ValueSize) }

// ParseCases parses "10000x32,100k x32,1Mx32,2000x64KiB": KEYSxBYTES,
// keys with an optional k (1000) or M (1000000), bytes with an optional
// KiB.
func ParseCases(s string) ([]Case, error) {
	var out []Case
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		k, v, ok := strings.Cut(f, "x")
		if !ok {
			return nil, fmt.Errorf("case %q: want KEYSxBYTES, e.g. 100000x32", f)
		}
		keys, err := parseScaled(strings.TrimSpace(k), map[string]int{"k": 1000, "M": 1_000_000})
		if err != nil {
			return nil, fmt.Errorf("case %q: keys: %w", f, err)
		}
		size, err := parseScaled(strings.TrimSpace(v), map[string]int{"KiB": 1024})
		if err != nil {
			return nil, fmt.Errorf("case %q: value size: %w", f, err)
		}
		if keys < 1 || keys > 100_000_000 || size < 16 || size > 1<<20 {
			return nil, fmt.Errorf("case %q: want 1..1e8 keys of 16..1048576 bytes", f)
		}
		out = append(out, Case{Keys: keys, ValueSize: size})
	}
	return out, nil
}

// parseScaled parses an integer with an optional suffix from units.
func parseScaled(s string, units map[string]int) (int, error) {
	mult := 1
	for suf, m := range units {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}

// Config is one `sdnkvs bench rejoin` run.
type Config struct {
	Bin string
	scenario.Topology
	Cases []Case
	// Cut is the DC that misses the writes (default: the far one, so the
	// copy crosses the far link).
	Cut string
	// Steady is the probe's time with both DCs live before each cut;
	// After its time after each rejoin.
	Steady, After time.Duration
	// RejoinTimeout bounds each heal-to-live wait.
	RejoinTimeout time.Duration
	// CatchupRate is the nodes' --catchup-rate ("": their default).
	CatchupRate   string
	Detector      string
	MiddleboxArgs []string
	KVSArgs       []string
	// Loaders is the number of load connections, Window MSETs in flight
	// on each.
	Loaders, Window int
	Out             string
	Log             io.Writer
}

// WithDefaults fills in zero fields and validates c.
func (c Config) WithDefaults() (Config, error) {
	var err error
	if c.Bin == "" {
		return c, errors.New("rejoin: no sdnkvs binary")
	}
	if c.Topology, err = c.Topology.WithDefaults(); err != nil {
		return c, fmt.Errorf("rejoin: %w", err)
	}
	if len(c.Cases) == 0 {
		c.Cases = []Case{{10_000, 32}, {100_000, 32}, {1_000_000, 32}, {2_000, 64 << 10}}
	}
	if c.Cut == "" {
		c.Cut = c.Far()
	}
	if c.Cut != c.Near() && c.Cut != c.Far() {
		return c, fmt.Errorf("rejoin: cut %q: want %s or %s", c.Cut, c.Near(), c.Far())
	}
	if c.Steady == 0 {
		c.Steady = 5 * time.Second
	}
	if c.After == 0 {
		c.After = 5 * time.Second
	}
	if c.RejoinTimeout == 0 {
		c.RejoinTimeout = 10 * time.Minute
	}
	if c.Detector == "" {
		c.Detector = "fast"
	}
	if c.Loaders == 0 {
		c.Loaders = 8
	}
	if c.Window == 0 {
		c.Window = 4
	}
	if c.Steady < 0 || c.After < 0 || c.RejoinTimeout < 0 || c.Loaders < 0 || c.Window < 0 {
		return c, errors.New("rejoin: negative steady, after, rejoin timeout, loaders or window")
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c, nil
}

// Row is one case's outcome. Times are seconds, -1: did not happen.
type Row struct {
	Case
	DC, Source string
	// Loaded is the keys acknowledged by the load (all of them unless it
	// failed); LoadS its time, LoadBytes the value bytes.
	Loaded    int
	LoadS     float64
	LoadBytes int64
	// CatchupS is heal to live; PassS the first to the last progress
	// sample of the passes (the copy itself); KeysCopied and BytesCopied
	// what the passes reported copied.
	CatchupS, PassS         float64
	KeysCopied, BytesCopied uint64
	KeysPerS, MBPerS        float64
	// LinkRatio is the copy's bit rate over the link rate (0: unlimited
	// link), over heal to live.
	LinkRatio float64
	// CopyS is the time passes were running (each from its first running
	// sample to its done sample), without the waits between passes;
	// CopyKeysPerS, CopyMBPerS and CopyLinkRatio are the rates over it.
	CopyS                                   float64
	CopyKeysPerS, CopyMBPerS, CopyLinkRatio float64
	// FirstPassS is heal to the first completed pass.
	FirstPassS float64
	// Probe write latency in milliseconds: before the cut (steady state,
	// the baseline), during catch-up (joining to live) and after it.
	BeforeP50, BeforeP99     float64
	DuringP50, DuringP99     float64
	AfterP50, AfterP99       float64
	BeforeN, DuringN, AfterN int
	ProbeErrors              int
	// PausedS is the time the cut DC's catch-up drivers paused between
	// batches to keep the delay they add to live writes under their
	// --catchup-target (INFO sdnkvs_catchup_paused_seconds, summed over
	// the DC's nodes, from the cut to the end of the case; -1: unknown).
	PausedS float64
	// ServedS is what the source DC's nodes measured of the streams they
	// served, from the cut to the end of the case (TCP_INFO, summed over
	// the nodes): seconds with data in flight, and of them the seconds
	// their send buffers and the drivers' receive windows held the
	// streams back ({-1,-1,-1}: unknown).
	ServedS [3]float64
	// Drops are the packets the testbed dropped from the heal to live
	// (the WAN emulator's queue and random loss, link interfaces, the
	// middlebox's TUN); DropsKnown is false when they could not be read.
	Drops      testbed.DropCounts
	DropsKnown bool
}

// Result is every case of a run.
type Result struct {
	Near, Far   string
	LinkRateBPS uint64
	DelayNear   time.Duration
	DelayFar    time.Duration
	Nodes       int
	CatchupRate string
	// TCPBuffers is the DCs' TCP buffer maximum (testbed.DC.TCPBuffers;
	// -1: the kernel's defaults).
	TCPBuffers int
	Rows       []Row
	Timeline   []string
	Files      []string
	Probe      []ProbeSample `json:"-"`
}

// Run builds the environment, runs every case and writes the files.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Log
	setupCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	env, err := scenario.NewEnv(setupCtx, scenario.EnvConfig{Bin: cfg.Bin, Name: cfg.Name, DCs: cfg.DCs, KVSExtra: cfg.KVSArgs, Log: log,
		Sequencing: scenario.Sequencing{Lifecycle: true, CatchupRate: cfg.CatchupRate}})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	if err := env.StartMiddlebox(setupCtx, scenario.MB{Detector: cfg.Detector, Extra: cfg.MiddleboxArgs}); err != nil {
		return nil, err
	}
	if err := env.CheckSettled(setupCtx, 2*time.Second); err != nil {
		return nil, err
	}
	res := &Result{Near: cfg.Near(), Far: cfg.Far(), LinkRateBPS: cfg.DCs[0].Rate, DelayNear: cfg.DCs[0].Delay, DelayFar: cfg.DCs[1].Delay,
		Nodes: cfg.Nodes(), CatchupRate: cfg.CatchupRate, TCPBuffers: cfg.DCs[0].TCPBuffers}
	if r := cfg.DCs[1].Rate; r > 0 && (res.LinkRateBPS == 0 || r < res.LinkRateBPS) {
		res.LinkRateBPS = r
	}
	origin := time.Now()
	tl := env.StartTimeline(ctx, origin, 100*time.Millisecond)
	pr := startProbe(ctx, env, origin, ProbeClients)
	defer func() {
		pr.stop()
		res.Probe = pr.samples()
		tl.Stop(env)
		if cfg.Out != "" { // the middlebox's decisions and the nodes' logs, for a slow or odd case
			logs := map[string]string{"middlebox": env.MiddleboxOutput(), cfg.Near(): env.ClusterOutput(cfg.Near()), cfg.Far(): env.ClusterOutput(cfg.Far())}
			for _, name := range []string{"middlebox", cfg.Near(), cfg.Far()} {
				p := filepath.Join(cfg.Out, "rejoin-"+name+".log")
				if os.MkdirAll(cfg.Out, 0o755) == nil && os.WriteFile(p, []byte(logs[name]), 0o644) == nil {
					res.Files = append(res.Files, p)
				}
			}
		}
		for _, c := range tl.Changes() {
			res.Timeline = append(res.Timeline, c.String())
		}
	}()
	source := cfg.Near()
	if cfg.Cut == cfg.Near() {
		source = cfg.Far()
	}
	for i, c := range cfg.Cases {
		row, err := runCase(ctx, env, cfg, tl, pr, origin, c, i, source)
		res.Rows = append(res.Rows, row)
		if err != nil {
			return res, err
		}
		fmt.Fprintf(log, "case %s: catch-up %.2fs (heal to live; first pass done %.2fs), %d keys, %.1f MB, %.0f keys/s, %.2f MB/s (%.2fx link); copy %.2fs: %.0f keys/s, %.2f MB/s (%.2fx link); write p99 before %.1fms during %.1fms after %.1fms; drops heal to live: %v\n",
			c, row.CatchupS, row.FirstPassS, row.KeysCopied, float64(row.BytesCopied)/1e6, row.KeysPerS, row.MBPerS, row.LinkRatio,
			row.CopyS, row.CopyKeysPerS, row.CopyMBPerS, row.CopyLinkRatio, row.BeforeP99, row.DuringP99, row.AfterP99, dropsText(row))
	}
	if cfg.Out != "" {
		pr.stop()
		res.Probe = pr.samples()
		files, err := res.WriteFiles(cfg.Out)
		res.Files = append(res.Files, files...)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// runCase runs one case in the running environment.
func runCase(ctx context.Context, env *scenario.Env, cfg Config, tl *scenario.Timeline, pr *probe, origin time.Time, c Case, idx int, source string) (Row, error) {
	log := cfg.Log
	row := Row{Case: c, DC: cfg.Cut, Source: source, CatchupS: -1, PassS: -1, FirstPassS: -1}
	since := func() time.Duration { return time.Since(origin) }
	fmt.Fprintf(log, "case %s: %v steady with both DCs live\n", c, cfg.Steady)
	steady0 := since()
	if err := sleep(ctx, cfg.Steady); err != nil {
		return row, err
	}
	paused0, perr := catchupPaused(ctx, env, cfg.Cut)
	served0, serr := infoSums(ctx, env, row.Source, servedFields...)
	cutAt := since()
	if err := env.TB.Cut(cfg.Cut); err != nil {
		return row, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := env.WaitDCState(wctx, cfg.Cut, scenario.StateDown)
	cancel()
	if err != nil {
		return row, fmt.Errorf("rejoin: %s never reported down after the cut: %w", cfg.Cut, err)
	}
	fmt.Fprintf(log, "case %s: %s cut and down; loading %d keys of %d bytes into %s\n", c, cfg.Cut, c.Keys, c.ValueSize, source)
	l0 := time.Now()
	loaded, lerr := load(ctx, env, cfg, c, fmt.Sprintf("rj%d:", idx), log)
	row.Loaded, row.LoadS, row.LoadBytes = loaded, time.Since(l0).Seconds(), int64(loaded)*int64(c.ValueSize)
	if lerr != nil {
		return row, fmt.Errorf("rejoin: load: %w", lerr)
	}
	healAt := since()
	drops0, dok := env.TB.Drops()
	if err := env.TB.Heal(cfg.Cut); err != nil {
		return row, err
	}
	fmt.Fprintf(log, "case %s: %d keys loaded in %.1fs; %s healed, waiting until it is live\n", c, loaded, row.LoadS, cfg.Cut)
	rctx, rcancel := context.WithTimeout(ctx, cfg.RejoinTimeout)
	stopProgress := progressPrinter(rctx, env, cfg.Cut, log)
	_, err = env.WaitDCState(rctx, cfg.Cut, scenario.StateLive)
	stopProgress()
	rcancel()
	if err != nil {
		return row, fmt.Errorf("rejoin: %w", err)
	}
	liveAt := since()
	if drops1, ok := env.TB.Drops(); ok && dok {
		row.Drops, row.DropsKnown = drops1.Sub(drops0), true
	}
	if t, ok := tl.FirstAfter(cfg.Cut, scenario.StateLive, healAt); ok {
		liveAt = min(liveAt, t)
	}
	row.CatchupS = (liveAt - healAt).Seconds()
	if err := sleep(ctx, cfg.After); err != nil {
		return row, err
	}
	afterEnd := since()
	row.PausedS = -1
	if paused1, err := catchupPaused(ctx, env, cfg.Cut); err == nil && perr == nil {
		row.PausedS = paused1 - paused0
	}
	row.ServedS = [3]float64{-1, -1, -1}
	if served1, err := infoSums(ctx, env, row.Source, servedFields...); err == nil && serr == nil {
		for k := range row.ServedS {
			row.ServedS[k] = served1[k] - served0[k]
		}
	}
	keys, bytes, first, last := scenario.CatchupTotals(tl.Progress(), cfg.Cut, healAt, afterEnd)
	row.KeysCopied, row.BytesCopied = keys, bytes
	if first > 0 && last > first {
		row.PassS = (last - first).Seconds()
	}
	if t, ok := scenario.FirstPassDone(tl.Progress(), cfg.Cut, healAt, afterEnd); ok {
		row.FirstPassS = (t - healAt).Seconds()
	}
	rates := func(sec float64) (kps, mbps, ratio float64) {
		if sec <= 0 {
			return 0, 0, 0
		}
		kps, mbps = float64(keys)/sec, float64(bytes)/1e6/sec
		if rate := cfg.DCs[0].Rate; rate > 0 {
			link := float64(min(rate, cfg.DCs[1].Rate))
			if cfg.DCs[1].Rate == 0 {
				link = float64(rate)
			}
			ratio = float64(bytes) * 8 / sec / link
		}
		return kps, mbps, ratio
	}
	row.KeysPerS, row.MBPerS, row.LinkRatio = rates(row.CatchupS)
	row.CopyS = passesRunning(tl.Progress(), cfg.Cut, healAt, afterEnd).Seconds()
	row.CopyKeysPerS, row.CopyMBPerS, row.CopyLinkRatio = rates(row.CopyS)
	lat := func(from, to time.Duration) (p50, p99 float64, n int) {
		var ls []time.Duration
		for _, s := range pr.samples() {
			if s.At >= from && s.At+s.Latency <= to && s.Err == "" {
				ls = append(ls, s.Latency)
			}
		}
		return ms(quantile(ls, 0.5)), ms(quantile(ls, 0.99)), len(ls)
	}
	row.BeforeP50, row.BeforeP99, row.BeforeN = lat(steady0, cutAt)
	// During catch-up: from joining (forks include the DC from then on;
	// before it, the healed DC is still down and writes go to the other
	// DC alone) to live.
	// A probe connection opened before joining lacks the DC until it
	// reconnects (every second): start a second after joining.
	joinAt := healAt
	if t, ok := tl.FirstAfter(cfg.Cut, scenario.StateJoining, healAt); ok && t+time.Second < liveAt {
		joinAt = t + time.Second
	}
	row.DuringP50, row.DuringP99, row.DuringN = lat(joinAt, liveAt)
	row.AfterP50, row.AfterP99, row.AfterN = lat(liveAt, afterEnd)
	for _, s := range pr.samples() {
		if s.Err != "" && s.At >= steady0 {
			row.ProbeErrors++
		}
	}
	return row, nil
}

// dropsText renders a row's drops ("unknown" when unread).
func dropsText(w Row) string {
	if !w.DropsKnown {
		return "unknown"
	}
	return w.Drops.String()
}

// catchupPaused sums INFO's sdnkvs_catchup_paused_seconds over dc's nodes
// (each asked from inside the DC).
func catchupPaused(ctx context.Context, env *scenario.Env, dc string) (float64, error) {
	v, err := infoSums(ctx, env, dc, "sdnkvs_catchup_paused_seconds")
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// servedFields are the source DC's INFO fields of the streams it served
// (kvs/catchup_stream_report.go): busy, send-buffer limited, receive-window
// limited seconds.
var servedFields = []string{"sdnkvs_catchup_served_busy_seconds", "sdnkvs_catchup_served_sndbuf_limited_seconds", "sdnkvs_catchup_served_rwnd_limited_seconds"}

// infoSums sums INFO fields over dc's nodes.
func infoSums(ctx context.Context, env *scenario.Env, dc string, fields ...string) ([]float64, error) {
	total := make([]float64, len(fields))
	for i := range env.TB.NodeAddrs(dc) {
		c, err := env.DialDC(ctx, dc, i)
		if err != nil {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rep, err := c.Do(cctx, []byte("INFO"))
		cancel()
		c.Close()
		if err != nil {
			return nil, err
		}
		for k, f := range fields {
			v, ok := infoField(string(rep.Str), f)
			if !ok {
				return nil, fmt.Errorf("rejoin: %s node %d: INFO has no %s", dc, i+1, f)
			}
			total[k] += v
		}
	}
	return total, nil
}

// infoField is the number after "name:" on one of INFO's lines.
func infoField(info, name string) (float64, bool) {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// passesRunning sums the running time of dc's catch-up passes that start
// between from and to: each from its first sample as running to its first
// sample as done (or the first sample of a later pass, or its last sample:
// the pass that makes the DC live leaves /dcs without a done sample).
func passesRunning(samples []scenario.ProgressSample, dc string, from, to time.Duration) time.Duration {
	old := map[uint64]bool{} // passes seen before from
	var total, start, last time.Duration
	var job uint64
	running := false
	for _, s := range samples {
		if s.DC != dc {
			continue
		}
		if s.At < from {
			old[s.Job] = true
			continue
		}
		if s.At > to {
			break
		}
		if running && (s.Job != job || s.State == "done" || s.Done) {
			total += s.At - start
			running = false
		}
		if !running && !old[s.Job] && s.State == "running" && s.Job != job {
			job, start, running = s.Job, s.At, true
		}
		if running {
			last = s.At
		}
	}
	if running {
		total += last - start
		running = false
	}
	return total
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// progressPrinter prints the joining DC's state and progress every second
// until the returned function is called.
func progressPrinter(ctx context.Context, env *scenario.Env, dc string, log io.Writer) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t0 := time.Now()
		for {
			if sleep(ctx, time.Second) != nil {
				return
			}
			d, err := env.DCStateOf(dc)
			if err != nil {
				fmt.Fprintf(log, "  +%.0fs /dcs: %v\n", time.Since(t0).Seconds(), err)
				continue
			}
			life := d.Life()
			line := fmt.Sprintf("  +%.0fs %s %s", time.Since(t0).Seconds(), dc, d.Lifecycle())
			if life.Cause != "" {
				line += " (" + life.Cause + ")"
			}
			if j := life.Catchup; j != nil {
				left := "? left"
				if j.Remaining != ^uint64(0) {
					left = fmt.Sprintf("%d left", j.Remaining)
				}
				line += fmt.Sprintf("  pass %d (%s) from %s: %d keys, %.1f MB, %s, %.0f keys/s, %.2f MB/s", j.Job, j.State, j.Source, j.Keys,
					float64(j.Bytes)/1e6, left, j.KeysPerSec, j.Rate/1e6)
			}
			if life.FlowsLacking > 0 {
				line += fmt.Sprintf("  %d flows lack it", life.FlowsLacking)
			}
			fmt.Fprintln(log, line)
		}
	}()
	return func() { cancel(); <-done }
}

// load writes c.Keys keys of c.ValueSize bytes through the forked port
// with MSETs, cfg.Loaders connections with cfg.Window commands in flight
// each, and returns the number of keys acknowledged.
func load(ctx context.Context, env *scenario.Env, cfg Config, c Case, prefix string, log io.Writer) (int, error) {
	batch := max(1, min(256, (256<<10)/c.ValueSize))
	if c.ValueSize > 4<<10 {
		batch = 1 // SET: kvs refuses an MSET with a value over 4 KiB ("key too large": it checks values as keys)
	}
	nb := (c.Keys + batch - 1) / batch
	next := make(chan int, cfg.Loaders*cfg.Window)
	go func() {
		defer close(next)
		for b := range nb {
			select {
			case next <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	var mu sync.Mutex
	acked, firstErr := 0, error(nil)
	var wg sync.WaitGroup
	val := make([]byte, c.ValueSize)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	for range cfg.Loaders {
		wg.Go(func() {
			n, err := loadConn(ctx, env, cfg.Window, next, batch, c.Keys, prefix, val)
			mu.Lock()
			acked += n
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstErr == nil && acked < c.Keys {
		firstErr = fmt.Errorf("%d of %d keys acknowledged", acked, c.Keys)
	}
	return acked, firstErr
}

// loadConn sends the batches it takes from next as pipelined MSETs on one
// connection (window in flight) until next is closed.
func loadConn(ctx context.Context, env *scenario.Env, window int, next <-chan int, batch, keys int, prefix string, val []byte) (int, error) {
	conn, err := env.DialClient(ctx, scenario.WritePort)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	inflight := make(chan int, window)
	errc := make(chan error, 1)
	acked := 0
	go func() {
		br := bufio.NewReaderSize(conn, 64<<10)
		for n := range inflight {
			conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			rep, err := resp.ReadReply(br)
			if err != nil {
				errc <- err
				for range inflight {
				}
				return
			}
			if !rep.IsOK() {
				errc <- fmt.Errorf("MSET/SET: %c%s", rep.Kind, rep.Str)
				for range inflight {
				}
				return
			}
			acked += n
		}
		errc <- nil
	}()
	bw := bufio.NewWriterSize(conn, 256<<10)
	var cmd []byte
	args := make([][]byte, 0, 1+2*batch)
	var sendErr error
	for b := range next {
		args = append(args[:0], []byte("MSET"))
		if batch == 1 {
			args[0] = []byte("SET")
		}
		n := 0
		for k := b * batch; k < min(keys, (b+1)*batch); k++ {
			args = append(args, []byte(prefix+strconv.Itoa(k)), val)
			n++
		}
		cmd = resp.AppendCommand(cmd[:0], args...)
		if len(inflight) == cap(inflight) {
			if sendErr = bw.Flush(); sendErr != nil {
				break
			}
		}
		inflight <- n
		if _, sendErr = bw.Write(cmd); sendErr != nil {
			break
		}
		if len(next) == 0 {
			if sendErr = bw.Flush(); sendErr != nil {
				break
			}
		}
	}
	if sendErr == nil {
		sendErr = bw.Flush()
	}
	close(inflight)
	rerr := <-errc
	if rerr != nil {
		return acked, rerr
	}
	return acked, sendErr
}

// ProbeSample is one probe write: when it was sent (since the run's
// origin), its latency, and its error ("" when acknowledged).
type ProbeSample struct {
	At      time.Duration
	Latency time.Duration
	Err     string
}

// ProbeClients is the number of closed-loop probe writers.
const ProbeClients = 4

// probe is the light closed-loop writer: ProbeClients clients, each one
// SET at a time through the forked port, on a new connection every second
// (so it is forked to the DCs live at the time, including a joining one).
type probe struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	list   []ProbeSample
}

func startProbe(ctx context.Context, env *scenario.Env, origin time.Time, clients int) *probe {
	ctx, cancel := context.WithCancel(ctx)
	p := &probe{cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { p.client(ctx, env, origin, i) })
	}
	go func() { wg.Wait(); close(p.done) }()
	return p
}

// client is one closed-loop probe writer.
func (p *probe) client(ctx context.Context, env *scenario.Env, origin time.Time, id int) {
	val := []byte("probe-value-0123456789abcdef")
	var c *resp.Client
	var opened time.Time
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for n := 0; ctx.Err() == nil; n++ {
		if c != nil && time.Since(opened) > time.Second {
			c.Close()
			c = nil
		}
		if c == nil {
			conn, err := env.DialClient(ctx, scenario.WritePort)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				p.add(ProbeSample{At: time.Since(origin), Err: "dial: " + err.Error()})
				sleep(ctx, 100*time.Millisecond)
				continue
			}
			c, opened = resp.NewClient(conn), time.Now()
		}
		at := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep, err := c.Do(cctx, []byte("SET"), []byte("probe:"+strconv.Itoa(id)+":"+strconv.Itoa(n%1000)), val)
		cancel()
		s := ProbeSample{At: at.Sub(origin), Latency: time.Since(at)}
		if err == nil && !rep.IsOK() {
			err = fmt.Errorf("reply %c%s", rep.Kind, rep.Str)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Err = err.Error()
			c.Close()
			c = nil
		}
		p.add(s)
	}
}

func (p *probe) add(s ProbeSample) {
	p.mu.Lock()
	p.list = append(p.list, s)
	p.mu.Unlock()
}

func (p *probe) samples() []ProbeSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.list)
}

func (p *probe) stop() {
	p.once.Do(func() { p.cancel(); <-p.done })
}
