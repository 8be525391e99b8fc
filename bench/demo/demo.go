//go:build linux

// Package demo is the disaster demo (docs/design.md section 7): it builds the
// namespace testbed with a near and a far DC, starts a kvs cluster in each
// and the middlebox at the edge, drives writes through the forked port and
// reads through the anycast port, cuts the near DC in the middle of the
// run, and then checks every acknowledged write against the far DC.
//
//	client ns: Writers x pipelined SET ──► VIP:6379 (forked)  ─┬─► near DC (cut at CutAt)
//	           Readers x MGET marker,key ► VIP:6380 (anycast) ─┴─► far DC
//	after the run: every acknowledged key ──MGET from inside the far DC ns──► far DC nodes
//
// It reports RPO (acknowledged writes the far DC does not hold), RTO for
// reads and for writes (cut to the first completion of an operation sent
// after the cut), write connections reset, and throughput before and after
// the cut. A write counts as acknowledged only when its +OK arrived.
//
// Mode "direct" is the baseline without SDN-KVS: the client talks to one
// node of the near DC directly, as to a store that replicates inside one
// DC; the same checks then show what a disaster costs without forking.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/failover"
)

// Config is one demo run. Zero values take the defaults shown.
type Config struct {
	Bin string // sdnkvs executable (required)
	// Topology is the near and the far DC (default: scenario.DefaultDCs).
	scenario.Topology

	// Scenario is "cut" (one cut of the near DC, the default) or
	// "lifecycle" (lifecycle.go: cut, heal, rejoin, cut the other DC...).
	Scenario string
	// Lifecycle configures the lifecycle scenario.
	Lifecycle LifecycleConfig

	Mode          string   // "sdn" (through the middlebox) or "direct" (baseline)
	Detector      string   // middlebox --detector: "fast" (or safe, paper, none)
	MiddleboxArgs []string // more middlebox flags
	KVSArgs       []string // more `kvs cluster` flags

	Duration time.Duration // workload duration: 30s
	CutAt    time.Duration // when the near DC is cut: 12s; negative: never
	Writers  int           // write connections: 8
	Window   int           // writes in flight per connection: 128
	Rate     float64       // total writes per second: 2000 (negative: unlimited)
	Readers  int           // read connections: 4
	// ValueSize is the size of each value: 32 bytes.
	ValueSize int
	// DialTimeout bounds a connection attempt: 3s. OpTimeout bounds one
	// operation's reply (0: none: the client relies on the middlebox's RST).
	DialTimeout, OpTimeout time.Duration

	DataDir string    // store data ("": temporary)
	Out     string    // directory for CSV and PNG ("": none)
	Log     io.Writer // progress and setup messages (nil: discarded)
}

// Defaults of Config.
const (
	DefaultDuration = 30 * time.Second
	DefaultCutAt    = 12 * time.Second
	// SettleTime is how long the demo watches the middlebox's DC state
	// before it starts the workload.
	SettleTime = 2 * time.Second
)

// WithDefaults fills in zero fields and validates c.
func (c Config) WithDefaults() (Config, error) {
	if c.Bin == "" {
		return c, errors.New("demo: no sdnkvs binary")
	}
	var err error
	if c.Topology, err = c.Topology.WithDefaults(); err != nil {
		return c, fmt.Errorf("demo: %w", err)
	}
	switch c.Scenario {
	case "":
		c.Scenario = ScenarioCut
	case ScenarioCut:
	case ScenarioLifecycle:
		if c.Mode == "direct" {
			return c, errors.New("demo: the lifecycle scenario runs through the middlebox only (mode sdn)")
		}
		if c.CutAt <= 0 {
			c.CutAt = 5 * time.Second
		}
		if c.Duration == 0 {
			c.Duration = time.Hour // unused: the disasters set the length
		}
		if c.Lifecycle, err = c.Lifecycle.withDefaults(); err != nil {
			return c, err
		}
	default:
		return c, fmt.Errorf("demo: scenario %q: want cut or lifecycle", c.Scenario)
	}
	switch c.Mode {
	case "":
		c.Mode = "sdn"
	case "sdn", "direct":
	default:
		return c, fmt.Errorf("demo: mode %q: want sdn or direct", c.Mode)
	}
	if c.Detector == "" {
		c.Detector = "fast"
	}
	if _, err := failover.ParseMode(c.Detector); err != nil {
		return c, fmt.Errorf("demo: %w", err)
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Duration < time.Second || c.Duration > time.Hour {
		return c, fmt.Errorf("demo: duration %v: want 1s..1h", c.Duration)
	}
	if c.CutAt == 0 {
		c.CutAt = DefaultCutAt
	}
	if c.CutAt >= c.Duration {
		return c, fmt.Errorf("demo: cut at %v is not before the end of the run (%v)", c.CutAt, c.Duration)
	}
	if c.Writers == 0 {
		c.Writers = 8
	}
	if c.Window == 0 {
		c.Window = 128
	}
	if c.Rate == 0 {
		c.Rate = 2000
	}
	if c.Readers == 0 {
		c.Readers = 4
	}
	if c.Writers < 0 || c.Readers < 0 || c.Window < 0 {
		return c, errors.New("demo: negative writers, readers or window")
	}
	if c.Writers+c.Readers == 0 {
		return c, errors.New("demo: no writer and no reader")
	}
	if c.ValueSize == 0 {
		c.ValueSize = 32
	}
	if c.ValueSize < 16 || c.ValueSize > 1<<20 {
		return c, fmt.Errorf("demo: value size %d: want 16..1048576", c.ValueSize)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 3 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c, nil
}

// Result is what a run measured. Times are seconds; an RTO of -1 means
// the service did not resume before the end of the run.
type Result struct {
	Mode     string  `json:"mode"`
	Detector string  `json:"detector"`
	Near     string  `json:"near_dc"`
	Far      string  `json:"far_dc"`
	Nodes    int     `json:"nodes_per_dc"`
	Duration float64 `json:"duration_s"`
	CutAt    float64 `json:"cut_at_s"` // -1: no cut

	AckedWrites    int `json:"acked_writes"`
	AckedBeforeCut int `json:"acked_before_cut"`
	AckedAfterCut  int `json:"acked_after_cut"`
	// AckedDuringRecovery counts the acks between the cut and the write
	// RTO (writes in flight at the cut), a subset of AckedAfterCut.
	AckedDuringRecovery int      `json:"acked_during_recovery"`
	RPOLost             int      `json:"rpo_lost"`
	RPOMissing          int      `json:"rpo_missing"`
	RPOWrong            int      `json:"rpo_wrong"`
	CheckedDC           string   `json:"checked_dc"`
	LostSamples         []string `json:"lost_samples,omitempty"`
	RTORead             float64  `json:"rto_read_s"`
	RTOWrite            float64  `json:"rto_write_s"`
	WriteStallMax       float64  `json:"write_stall_max_s"` // longest time with no write acknowledged
	WriteResets         int64    `json:"write_resets"`
	WriteReconnects     int64    `json:"write_reconnects"`
	ReadResets          int64    `json:"read_resets"`
	ReadReconnects      int64    `json:"read_reconnects"`
	Errors              int64    `json:"errors"`
	Reads               int64    `json:"reads"`
	StaleReads          int64    `json:"stale_reads"`
	// Reads served by each DC before and after the cut (by marker).
	ReadsByDCBefore map[string]int64 `json:"reads_by_dc_before"`
	ReadsByDCAfter  map[string]int64 `json:"reads_by_dc_after"`

	WritesPerSBefore float64 `json:"writes_per_s_before"`
	WritesPerSAfter  float64 `json:"writes_per_s_after"`
	ReadsPerSBefore  float64 `json:"reads_per_s_before"`
	ReadsPerSAfter   float64 `json:"reads_per_s_after"`

	// Transitions are the middlebox's failover decisions during the run,
	// as "+12.34s sydney NodeDown node (signal): cause".
	Transitions []string `json:"transitions,omitempty"`

	Files  []string       `json:"files,omitempty"`
	Series []scenario.Bin `json:"-"`
}

// RunLifecycle runs the lifecycle scenario (lifecycle.go): environment
// up, workload, disasters, checks, report files, teardown.
func RunLifecycle(ctx context.Context, cfg Config) (*LifecycleResult, error) {
	cfg.Scenario = ScenarioLifecycle
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	return runLifecycle(ctx, cfg)
}

// Run runs the demo: environment up, workload, cut, verification, report
// files, teardown (also when ctx is cancelled or a step fails).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Scenario != ScenarioCut {
		return nil, fmt.Errorf("demo: Run runs the cut scenario; use RunLifecycle for %q", cfg.Scenario)
	}
	log := cfg.Log
	setupCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	env, err := scenario.NewEnv(setupCtx, scenario.EnvConfig{Bin: cfg.Bin, Name: cfg.Name, DCs: cfg.DCs, DataDir: cfg.DataDir, KVSExtra: cfg.KVSArgs, Log: log})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	if cfg.Mode == "sdn" {
		if err := env.StartMiddlebox(setupCtx, scenario.MB{Detector: cfg.Detector, Extra: cfg.MiddleboxArgs}); err != nil {
			return nil, err
		}
		if cfg.Detector != "none" {
			// Long enough for a detector to misjudge a live DC (a few
			// probe intervals and far-DC round trips).
			if err := env.CheckSettled(setupCtx, SettleTime); err != nil {
				return nil, err
			}
		}
	}
	return RunIn(ctx, env, cfg)
}

// RunIn runs the workload, the cut and the checks in a ready environment
// (middlebox running in mode sdn). cfg must have passed WithDefaults.
func RunIn(ctx context.Context, env *scenario.Env, cfg Config) (*Result, error) {
	log := cfg.Log
	wcfg := scenario.WorkloadConfig{
		Writers: cfg.Writers, Window: cfg.Window, Rate: max(cfg.Rate, 0), Readers: cfg.Readers,
		ValueSize: cfg.ValueSize, KeyPrefix: "demo:" + env.TB.Name() + ":",
		DCs: []string{cfg.Near(), cfg.Far()}, DialTimeout: cfg.DialTimeout, OpTimeout: cfg.OpTimeout,
		MaxSeconds: int(cfg.Duration/time.Second) + 2,
	}
	switch cfg.Mode {
	case "sdn":
		wcfg.DialWrite = func(ctx context.Context) (net.Conn, error) { return env.DialClient(ctx, scenario.WritePort) }
		wcfg.DialRead = func(ctx context.Context) (net.Conn, error) { return env.DialClient(ctx, scenario.ReadPort) }
	case "direct":
		node := netip.AddrPortFrom(env.TB.NodeAddrs(cfg.Near())[0], scenario.NodePort)
		d := func(ctx context.Context) (net.Conn, error) { return env.DialClientTo(ctx, node) }
		wcfg.DialWrite, wcfg.DialRead = d, d
	}
	w, err := scenario.NewWorkload(wcfg)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "workload: %d writers (window %d, %.0f writes/s) via %s, %d readers via %s; cut %s at %v of %v\n",
		cfg.Writers, cfg.Window, cfg.Rate, writeTarget(cfg), cfg.Readers, readTarget(cfg), cfg.Near(), cfg.CutAt, cfg.Duration)
	w.Start(ctx)
	stopped := false
	defer func() {
		if !stopped {
			w.Stop()
		}
	}()

	var cut time.Duration = -1
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(cfg.Duration)
	defer end.Stop()
	var cutC <-chan time.Time
	if cfg.CutAt > 0 {
		t := time.NewTimer(cfg.CutAt)
		defer t.Stop()
		cutC = t.C
	}
	sec := 0
	note := ""
loop:
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-cutC:
			if err := env.TB.Cut(cfg.Near()); err != nil {
				return nil, fmt.Errorf("demo: cut %s: %w", cfg.Near(), err)
			}
			cut = w.MarkCut()
			note = fmt.Sprintf("<< %s cut at %.1fs", cfg.Near(), cut.Seconds())
		case <-tick.C:
			for ; sec < int(w.Now()/time.Second); sec++ {
				fmt.Fprintln(log, w.ProgressLine(sec, note))
				note = ""
			}
		case <-end.C:
			break loop
		}
	}
	w.Stop()
	stopped = true
	runEnd := w.Now()
	var trans []scenario.Transition
	if cfg.Mode == "sdn" {
		trans, _ = env.Transitions() // best effort: the report still stands without them
	}

	res := &Result{
		Mode: cfg.Mode, Detector: cfg.Detector, Near: cfg.Near(), Far: cfg.Far(), Nodes: cfg.Nodes(),
		Duration: runEnd.Seconds(), CutAt: -1, RTORead: -1, RTOWrite: -1,
	}
	if cfg.Mode == "direct" {
		res.Detector = ""
	}
	ids, times := w.Acked()
	res.AckedWrites = len(ids)
	for _, t := range times {
		if cut >= 0 && t >= int64(cut) {
			res.AckedAfterCut++
		} else {
			res.AckedBeforeCut++
		}
	}
	if cut >= 0 {
		res.CutAt = cut.Seconds()
		wr, rd := w.RecoveredAfterCut()
		if wr > 0 {
			res.RTOWrite = wr.Seconds()
		}
		if rd > 0 {
			res.RTORead = rd.Seconds()
		}
	}
	if res.RTOWrite >= 0 {
		rec := int64(cut) + int64(res.RTOWrite*float64(time.Second))
		for _, t := range times {
			if t >= int64(cut) && t < rec {
				res.AckedDuringRecovery++
			}
		}
	}
	res.WriteStallMax = maxGap(times, int64(runEnd))
	tot := w.Totals()
	res.WriteResets, res.WriteReconnects = tot.WriteResets, tot.WriteReconnects
	res.ReadResets, res.ReadReconnects = tot.ReadResets, tot.ReadReconnects
	res.Errors, res.Reads, res.StaleReads = tot.Errors, tot.Reads, tot.Stale
	res.Series = w.Bins(int(runEnd/time.Second) + 1)
	res.ReadsByDCBefore, res.ReadsByDCAfter = map[string]int64{}, map[string]int64{}
	names := append(slices.Clone(wcfg.DCs), "unknown")
	for _, b := range res.Series {
		m := res.ReadsByDCBefore
		if cut >= 0 && b.Second >= int(cut/time.Second) {
			m = res.ReadsByDCAfter
		}
		for i, v := range b.ReadsByDC {
			if v > 0 {
				m[names[i]] += v
			}
		}
	}
	throughput(res, times, w.ReadTimes(), cut, runEnd)
	for _, t := range trans {
		res.Transitions = append(res.Transitions, fmt.Sprintf("%+.2fs %s %s %s (%s): %s",
			t.At.Sub(w.StartTime()).Seconds(), t.DC, t.Kind, t.Node, t.Signal, t.Cause))
	}

	// Every acknowledged write must be in the far DC, the survivor.
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer vcancel()
	chk, err := env.Verify(vctx, cfg.Far(), w, ids)
	if err != nil {
		return res, err
	}
	res.CheckedDC = chk.DC
	res.RPOMissing, res.RPOWrong, res.RPOLost = chk.Missing, chk.Wrong, chk.Lost()
	res.LostSamples = chk.Samples

	if cfg.Out != "" {
		files, err := WriteFiles(cfg.Out, "demo-"+cfg.Mode, res)
		res.Files = files
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

func writeTarget(c Config) string {
	if c.Mode == "direct" {
		return c.Near() + " node 1 (no middlebox)"
	}
	return fmt.Sprintf("VIP:%d (forked)", scenario.WritePort)
}

func readTarget(c Config) string {
	if c.Mode == "direct" {
		return c.Near() + " node 1 (no middlebox)"
	}
	return fmt.Sprintf("VIP:%d (anycast)", scenario.ReadPort)
}
