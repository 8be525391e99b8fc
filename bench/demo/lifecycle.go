//go:build linux

package demo

// The lifecycle scenario (issue 9, docs/design-lifecycle.md): the whole
// life of the system through several disasters, not one.
//
//	writes (forked SET) and reads (anycast MGET, half of them of any key
//	acknowledged so far) run throughout; for each disaster k = 1..Cycles:
//	  cut DC k (near, far, near, ...) at a random time after the system
//	  is whole again ─► keep writing for Outage ─► check every write
//	  acknowledged so far in the survivor ─► heal DC k ─► wait until the
//	  middlebox reports it live again (joining while it catches up)
//	the last disaster is not healed; the run ends Tail after it with a
//	final check of every acknowledged write in the last survivor.
//
// It reports RPO over every disaster (each check, and the final one),
// the time each DC took from heal to live (catch-up), stale reads (a read
// that returned an older value than one acknowledged before the read
// began: every key is written once, so nil or another value), the write
// RTO of each cut and the state timeline from /dcs.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
)

// Scenario names of Config.Scenario.
const (
	ScenarioCut       = "cut"
	ScenarioLifecycle = "lifecycle"
)

// Defaults of the lifecycle scenario.
const (
	DefaultCycles        = 2
	DefaultOutage        = 6 * time.Second
	DefaultSteady        = 3 * time.Second
	DefaultRejoinTimeout = 120 * time.Second
	DefaultTail          = 4 * time.Second
)

// LifecycleConfig are the lifecycle scenario's settings (Config.Scenario
// "lifecycle"). Zero values take the defaults.
type LifecycleConfig struct {
	// Cycles is the number of disasters, alternating near, far, near...:
	// 2 (cut near, heal, rejoin, cut far).
	Cycles int
	// Outage is how long a cut DC stays cut.
	Outage time.Duration
	// Steady is the least time the system runs whole before the next cut;
	// the cut comes at a random time in [Steady, 2*Steady).
	Steady time.Duration
	// RejoinTimeout bounds the wait for a healed DC to be live again.
	RejoinTimeout time.Duration
	// Tail is how long writes go on after the last cut.
	Tail time.Duration
	// Rejoin is the middlebox's --rejoin ("": its default, catchup with
	// --sequenced); "trust" is the old behaviour, the baseline.
	Rejoin string
	// Seed makes the cut times reproducible (0: random).
	Seed uint64
}

func (c LifecycleConfig) withDefaults() (LifecycleConfig, error) {
	if c.Cycles == 0 {
		c.Cycles = DefaultCycles
	}
	if c.Outage == 0 {
		c.Outage = DefaultOutage
	}
	if c.Steady == 0 {
		c.Steady = DefaultSteady
	}
	if c.RejoinTimeout == 0 {
		c.RejoinTimeout = DefaultRejoinTimeout
	}
	if c.Tail == 0 {
		c.Tail = DefaultTail
	}
	if c.Cycles < 1 || c.Cycles > 1000 {
		return c, fmt.Errorf("demo: cycles %d: want 1..1000", c.Cycles)
	}
	if c.Outage < 0 || c.Steady < 0 || c.RejoinTimeout < 0 || c.Tail < 0 {
		return c, fmt.Errorf("demo: negative outage, steady, rejoin timeout or tail")
	}
	switch c.Rejoin {
	case "", "catchup", "manual", "trust":
	default:
		return c, fmt.Errorf("demo: rejoin %q: want catchup, manual or trust", c.Rejoin)
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	return c, nil
}

// Disaster is one cut of the lifecycle scenario. Times are seconds since
// the workload started; -1 means it did not happen.
type Disaster struct {
	N        int     `json:"n"`
	DC       string  `json:"dc"`
	Survivor string  `json:"survivor"`
	CutAt    float64 `json:"cut_at_s"`
	DownAt   float64 `json:"down_at_s"` // middlebox reported the DC down
	RTOWrite float64 `json:"rto_write_s"`
	RTORead  float64 `json:"rto_read_s"`
	// The check of every write acknowledged so far in the survivor, made
	// Outage after the cut.
	Checked int     `json:"checked"`
	Lost    int     `json:"lost"`
	HealAt  float64 `json:"heal_at_s"`
	// JoiningAt is when the middlebox reported it joining, PassDoneAt
	// its first completed catch-up pass, LiveAt live again; CatchupS =
	// LiveAt - HealAt (it includes the wait for flows that lack the DC to
	// close or be reset, --rejoin-reset-after).
	JoiningAt    float64 `json:"joining_at_s"`
	PassDoneAt   float64 `json:"pass_done_at_s"`
	LiveAt       float64 `json:"live_at_s"`
	CatchupS     float64 `json:"catchup_s"`
	CatchupKeys  uint64  `json:"catchup_keys"`
	CatchupBytes uint64  `json:"catchup_bytes"`
}

// LifecycleResult is what a lifecycle run measured.
type LifecycleResult struct {
	Scenario string  `json:"scenario"`
	Rejoin   string  `json:"rejoin"`
	Detector string  `json:"detector"`
	Near     string  `json:"near_dc"`
	Far      string  `json:"far_dc"`
	Nodes    int     `json:"nodes_per_dc"`
	Seed     uint64  `json:"seed"`
	Duration float64 `json:"duration_s"`

	AckedWrites int `json:"acked_writes"`
	// RPOLost is the most acknowledged writes a survivor lacked over
	// every check (0: RPO 0 over every disaster); FinalLost is the final
	// check's, in FinalDC.
	RPOLost     int        `json:"rpo_lost"`
	FinalDC     string     `json:"final_dc"`
	FinalLost   int        `json:"final_lost"`
	LostSamples []string   `json:"lost_samples,omitempty"`
	Disasters   []Disaster `json:"disasters"`
	// Rejoins is the number of healed DCs that became live again in
	// time; CatchupMaxS the longest heal-to-live time.
	Rejoins     int     `json:"rejoins"`
	CatchupMaxS float64 `json:"catchup_max_s"`

	Reads            int64            `json:"reads"`
	StaleReads       int64            `json:"stale_reads"`
	StaleAfterRejoin int64            `json:"stale_reads_after_rejoin"`
	Errors           int64            `json:"errors"`
	WriteResets      int64            `json:"write_resets"`
	WriteStallMax    float64          `json:"write_stall_max_s"`
	WritesPerS       float64          `json:"writes_per_s"`
	ReadsByDC        map[string]int64 `json:"reads_by_dc"`

	Timeline []string `json:"timeline"`
	Files    []string `json:"files,omitempty"`

	Series  []scenario.Bin            `json:"-"`
	Changes []scenario.StateChange    `json:"-"`
	Samples []scenario.ProgressSample `json:"-"`
}

// runLifecycle builds the sequenced environment with catch-up between the
// DCs and runs the lifecycle scenario.
func runLifecycle(ctx context.Context, cfg Config) (*LifecycleResult, error) {
	lc, err := cfg.Lifecycle.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg.Lifecycle = lc
	setupCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	env, err := scenario.NewEnv(setupCtx, scenario.EnvConfig{Bin: cfg.Bin, Name: cfg.Name, DCs: cfg.DCs, DataDir: cfg.DataDir,
		KVSExtra: cfg.KVSArgs, Log: cfg.Log, Sequencing: scenario.Sequencing{Lifecycle: true}})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	mbArgs := slices.Clone(cfg.MiddleboxArgs)
	if lc.Rejoin != "" {
		mbArgs = append(mbArgs, "--rejoin", lc.Rejoin)
	}
	if err := env.StartMiddlebox(setupCtx, scenario.MB{Detector: cfg.Detector, Extra: mbArgs}); err != nil {
		return nil, err
	}
	if cfg.Detector != "none" {
		if err := env.CheckSettled(setupCtx, SettleTime); err != nil {
			return nil, err
		}
	}
	return RunLifecycleIn(ctx, env, cfg)
}

// lifecycleRun is the state of one run shared with its progress printer.
type lifecycleRun struct {
	env  *scenario.Env
	cfg  Config
	w    *scenario.Workload
	tl   *scenario.Timeline
	mu   sync.Mutex
	note string
}

func (r *lifecycleRun) addNote(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.note != "" {
		r.note += "; "
	}
	r.note += fmt.Sprintf(format, a...)
}

// printer prints one progress line per second until ctx ends.
func (r *lifecycleRun) printer(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sec := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for ; sec < int(r.w.Now()/time.Second); sec++ {
			r.mu.Lock()
			note := r.note
			r.note = ""
			r.mu.Unlock()
			states := ""
			for _, d := range []string{r.cfg.Near(), r.cfg.Far()} {
				states += fmt.Sprintf(" %s:%s", d, r.tl.State(d))
			}
			fmt.Fprintln(r.cfg.Log, r.w.ProgressLine(sec, "["+states[1:]+"] "+note))
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RunLifecycleIn runs the lifecycle scenario in a ready environment
// (lifecycle-sequenced, middlebox running). cfg must have passed
// WithDefaults.
func RunLifecycleIn(ctx context.Context, env *scenario.Env, cfg Config) (*LifecycleResult, error) {
	lc := cfg.Lifecycle
	log := cfg.Log
	rng := rand.New(rand.NewPCG(lc.Seed, 9))
	bound := cfg.CutAt + time.Duration(lc.Cycles)*(2*lc.Steady+lc.Outage+lc.RejoinTimeout) + lc.Tail + time.Minute
	wcfg := scenario.WorkloadConfig{
		Writers: cfg.Writers, Window: cfg.Window, Rate: max(cfg.Rate, 0), Readers: cfg.Readers,
		ValueSize: cfg.ValueSize, KeyPrefix: "life:" + env.TB.Name() + ":",
		DCs: []string{cfg.Near(), cfg.Far()}, DialTimeout: cfg.DialTimeout, OpTimeout: cfg.OpTimeout,
		MaxSeconds: int(min(bound, 2*time.Hour) / time.Second), ReadOld: 0.5, ReadReconnect: time.Second,
		DialWrite: func(ctx context.Context) (net.Conn, error) { return env.DialClient(ctx, scenario.WritePort) },
		DialRead:  func(ctx context.Context) (net.Conn, error) { return env.DialClient(ctx, scenario.ReadPort) },
	}
	w, err := scenario.NewWorkload(wcfg)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "lifecycle: %d disasters (alternating %s, %s), outage %v, %d writers (%.0f writes/s) via VIP:%d (forked, sequenced), %d readers via VIP:%d (anycast); seed %d\n",
		lc.Cycles, cfg.Near(), cfg.Far(), lc.Outage, cfg.Writers, cfg.Rate, scenario.WritePort, cfg.Readers, scenario.ReadPort, lc.Seed)
	w.Start(ctx)
	stopped := false
	defer func() {
		if !stopped {
			w.Stop()
		}
	}()
	pctx, pcancel := context.WithCancel(ctx)
	tl := env.StartTimeline(pctx, w.StartTime(), 100*time.Millisecond)
	run := &lifecycleRun{env: env, cfg: cfg, w: w, tl: tl}
	pdone := make(chan struct{})
	go run.printer(pctx, pdone)
	defer func() { pcancel(); <-pdone }()

	res := &LifecycleResult{Scenario: ScenarioLifecycle, Rejoin: lc.Rejoin, Detector: cfg.Detector, Near: cfg.Near(), Far: cfg.Far(),
		Nodes: cfg.Nodes(), Seed: lc.Seed, FinalDC: cfg.Far()}
	if res.Rejoin == "" {
		res.Rejoin = "catchup"
	}
	secs := func(d time.Duration) float64 { return d.Seconds() }
	var firstRejoin time.Duration = -1
	wait := cfg.CutAt
	for k := range lc.Cycles {
		victim, survivor := cfg.Near(), cfg.Far()
		if k%2 == 1 {
			victim, survivor = survivor, victim
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return nil, err
		}
		if err := env.TB.Cut(victim); err != nil {
			return nil, fmt.Errorf("demo: cut %s: %w", victim, err)
		}
		cut := w.MarkCut()
		run.addNote("<< %s cut (disaster %d)", victim, k+1)
		d := Disaster{N: k + 1, DC: victim, Survivor: survivor, CutAt: secs(cut), DownAt: -1, RTOWrite: -1, RTORead: -1,
			HealAt: -1, JoiningAt: -1, PassDoneAt: -1, LiveAt: -1, CatchupS: -1}
		if err := sleepCtx(ctx, lc.Outage); err != nil {
			return nil, err
		}
		if t, ok := tl.FirstAfter(victim, scenario.StateDown, cut); ok {
			d.DownAt = secs(t)
		}
		if wr, rd := w.RecoveredAfterCut(); wr > 0 || rd > 0 {
			if wr > 0 {
				d.RTOWrite = wr.Seconds()
			}
			if rd > 0 {
				d.RTORead = rd.Seconds()
			}
		}
		// Every write acknowledged so far must be in the survivor.
		ids, _ := w.Acked()
		chk, err := env.Verify(ctx, survivor, w, ids)
		if err != nil {
			return nil, fmt.Errorf("demo: check %s after disaster %d: %w", survivor, k+1, err)
		}
		d.Checked, d.Lost = chk.Checked, chk.Lost()
		res.RPOLost = max(res.RPOLost, chk.Lost())
		if len(res.LostSamples) < 5 {
			res.LostSamples = append(res.LostSamples, chk.Samples...)
		}
		run.addNote("check %s: %d of %d acknowledged writes lost", survivor, chk.Lost(), chk.Checked)
		fmt.Fprintf(log, "disaster %d: %s cut; %s holds %d of %d acknowledged writes\n", k+1, victim, survivor, chk.Checked-chk.Lost(), chk.Checked)
		if k == lc.Cycles-1 {
			res.Disasters = append(res.Disasters, d)
			res.FinalDC = survivor
			break
		}
		if err := env.TB.Heal(victim); err != nil {
			return nil, fmt.Errorf("demo: heal %s: %w", victim, err)
		}
		heal := w.Now()
		d.HealAt = secs(heal)
		run.addNote(">> %s healed", victim)
		rctx, rcancel := context.WithTimeout(ctx, lc.RejoinTimeout)
		_, err = env.WaitDCState(rctx, victim, scenario.StateLive)
		rcancel()
		if err != nil {
			res.Disasters = append(res.Disasters, d)
			stopped = true
			w.Stop()
			finishLifecycle(res, w, tl, env, firstRejoin)
			res.FinalLost = -1 // the final check was not made
			return res, fmt.Errorf("demo: %s did not rejoin within %v after the heal: %w", victim, lc.RejoinTimeout, err)
		}
		live := w.Now()
		if t, ok := tl.FirstAfter(victim, scenario.StateLive, heal); ok {
			live = min(live, t)
		}
		if t, ok := tl.FirstAfter(victim, scenario.StateJoining, heal); ok && t <= live {
			d.JoiningAt = secs(t)
		}
		d.LiveAt, d.CatchupS = secs(live), secs(live-heal)
		d.CatchupKeys, d.CatchupBytes, _, _ = scenario.CatchupTotals(tl.Progress(), victim, heal, live+time.Second)
		if t, ok := scenario.FirstPassDone(tl.Progress(), victim, heal, live+time.Second); ok {
			d.PassDoneAt = secs(t)
		}
		if firstRejoin < 0 {
			firstRejoin = live
		}
		res.Rejoins++
		res.CatchupMaxS = max(res.CatchupMaxS, d.CatchupS)
		run.addNote("%s live again %.2fs after the heal", victim, d.CatchupS)
		res.Disasters = append(res.Disasters, d)
		wait = lc.Steady + time.Duration(rng.Int64N(int64(max(lc.Steady, time.Millisecond))))
	}
	if err := sleepCtx(ctx, lc.Tail); err != nil {
		return nil, err
	}
	w.Stop()
	stopped = true
	finishLifecycle(res, w, tl, env, firstRejoin)

	// The final check: every acknowledged write, in the last survivor.
	ids, _ := w.Acked()
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer vcancel()
	chk, err := env.Verify(vctx, res.FinalDC, w, ids)
	if err != nil {
		return res, err
	}
	res.FinalLost = chk.Lost()
	res.RPOLost = max(res.RPOLost, chk.Lost())
	if len(res.LostSamples) < 5 {
		res.LostSamples = append(res.LostSamples, chk.Samples...)
	}
	if cfg.Out != "" {
		files, err := WriteLifecycleFiles(cfg.Out, "demo-lifecycle", res)
		res.Files = files
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// finishLifecycle fills the workload totals and the timeline after the
// workload stopped.
func finishLifecycle(res *LifecycleResult, w *scenario.Workload, tl *scenario.Timeline, env *scenario.Env, firstRejoin time.Duration) {
	end := w.Now()
	tl.Stop(env)
	res.Duration = end.Seconds()
	ids, times := w.Acked()
	res.AckedWrites = len(ids)
	res.WriteStallMax = maxGap(times, int64(end))
	if end > 0 {
		res.WritesPerS = float64(len(ids)) / end.Seconds()
	}
	tot := w.Totals()
	res.Reads, res.StaleReads, res.Errors, res.WriteResets = tot.Reads, tot.Stale, tot.Errors, tot.WriteResets
	res.Series = w.Bins(int(end/time.Second) + 1)
	names := []string{res.Near, res.Far, "unknown"}
	res.ReadsByDC = map[string]int64{}
	for i, v := range tot.ReadsByDC {
		if v > 0 {
			res.ReadsByDC[names[i]] += v
		}
	}
	if firstRejoin >= 0 {
		for _, b := range res.Series {
			if b.Second >= int(firstRejoin/time.Second)+1 {
				res.StaleAfterRejoin += b.Stale
			}
		}
	}
	res.Changes = tl.Changes()
	res.Samples = tl.Progress()
	for _, c := range res.Changes {
		res.Timeline = append(res.Timeline, c.String())
	}
}
