package failover

import (
	"errors"
	"fmt"
	"time"
)

// Lifecycle is the pure state machine of the DCs' lifecycle
// (docs/design-lifecycle.md, "Middlebox side"): which DCs are current
// (live), which are cut (down) and which are back but catching up
// (joining), and the catch-up jobs that bring a joining DC back.
//
//	detector      ── DCDown / DCUp ──────────────┐
//	forked flows  ── Missed / SetLacking ────────┤
//	order streams ── Progress / JobLost ─────────┼─► Lifecycle ─► []LifeEvent
//	operator      ── Admit ──────────────────────┤    (transitions, CATCHUP, STOP,
//	timer         ── Tick ───────────────────────┘     reset of flows lacking a DC)
//
// A DC "missed bytes" when a client byte was acknowledged without it: it
// was cut, or a branch of a forked flow to it was removed while the flow
// went on with other DCs. From then on it is out of sync since a cursor C
// (a sequencer tag): every record it may lack has a tag above C. It
// becomes live again only through a catch-up pass (Mode RejoinCatchup) or
// an operator's Admit (RejoinManual); RejoinTrust readmits on
// reachability alone (the behaviour before lifecycle, for backends that
// are not a store).
//
// A pass is one CATCHUP job: a node of the joining DC copies every record
// above the pass's start cursor from a live DC, in tag order, and reports
// PROGRESS. A pass admits the DC when it completes (JobDone) and was
// clean: when it started, no forked flow lacked the DC and none had for
// Margin (a record written by such a flow is stored at the source within
// Margin of its stamp, so a clean pass finds it), and nothing was missed
// while it ran. Otherwise passes repeat (a change feed) and, ResetAfter
// after the first completed pass, the flows that still lack the DC are
// reset (EvResetLacking).
//
// A DC that missed bytes for a divergence (a reply mismatch: its store
// answered otherwise than the others) needs a verify pass: an incremental
// pass copies only records above the cursor, so a corrupt old record
// (same tag, another value) would stay. A verify pass (CATCHUP with
// orderwire.CatchupVerify and a Bound) first repairs every record at or
// below Bound to the source's. Verify passes of one DC start at most once
// per VerifyEvery; until the next one may start, plain passes run (the
// DC follows the writes) but none admits it.
//
// Like the Detector it starts no goroutine, opens no socket and never
// reads the clock; every method takes now, and a now earlier than one
// already seen counts as the latest. It is not safe for concurrent use.
// Slices of events it returns are owned by it and valid until its next
// call.
type Lifecycle struct {
	cfg     LifecycleConfig
	dcs     []lifeDC
	nextJob uint64
	now     time.Time
	out     []LifeEvent
	stats   LifeStats
}

// DCState is a DC's lifecycle state.
type DCState uint8

// DC states.
const (
	DCStateLive    DCState = iota + 1 // current: anycast may choose it, it counts for the last-DC hold
	DCStateDown                       // unreachable (the detector's DCDown)
	DCStateJoining                    // reachable, out of sync: forked flows include it, anycast does not
	numDCStates
)

var dcStateNames = [...]string{"", "live", "down", "joining"}

// String returns "live", "down" or "joining".
func (s DCState) String() string {
	if s > 0 && s < numDCStates {
		return dcStateNames[s]
	}
	return fmt.Sprintf("DCState(%d)", uint8(s))
}

// MarshalText returns the state's name.
func (s DCState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a state's name.
func (s *DCState) UnmarshalText(b []byte) error {
	for i := DCStateLive; i < numDCStates; i++ {
		if dcStateNames[i] == string(b) {
			*s = i
			return nil
		}
	}
	return fmt.Errorf("unknown DC state %q", b)
}

// allowedEdge reports whether a DC may move from one state to another.
// down -> live only in RejoinTrust mode (checked by the caller).
func allowedEdge(from, to DCState) bool {
	switch from {
	case DCStateLive:
		return to == DCStateDown || to == DCStateJoining
	case DCStateDown:
		return to == DCStateJoining || to == DCStateLive
	case DCStateJoining:
		return to == DCStateLive || to == DCStateDown
	}
	return false
}

// LifeCause is why a DC changed state (a metric label).
type LifeCause uint8

// Causes.
const (
	LifeStart      LifeCause = iota // initial state
	LifeCut                         // the detector declared the DC down
	LifeHealed                      // the detector declared it up again
	LifeLagged                      // a branch to it was dropped for lag
	LifeRST                         // a branch to it was reset
	LifeDivergence                  // a branch to it diverged (reply mismatch)
	LifeHandshake                   // it was left out of a forked flow's handshake
	LifeBranchDown                  // a branch to it was removed by failover (node down, order stream down)
	LifeCaughtUp                    // a clean catch-up pass completed
	LifeAdmitted                    // an operator admitted it (RejoinManual)
	LifeRestored                    // state restored from a previous run
	numLifeCauses
)

var lifeCauseNames = [...]string{"start", "cut", "healed", "lagged", "rst", "divergence", "handshake", "branch_down", "caught_up", "admitted", "restored"}

// String returns the cause's label, e.g. "caught_up".
func (c LifeCause) String() string {
	if c < numLifeCauses {
		return lifeCauseNames[c]
	}
	return fmt.Sprintf("LifeCause(%d)", uint8(c))
}

// MarshalText returns the cause's label.
func (c LifeCause) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses a cause's label.
func (c *LifeCause) UnmarshalText(b []byte) error {
	for i := range numLifeCauses {
		if lifeCauseNames[i] == string(b) {
			*c = i
			return nil
		}
	}
	return fmt.Errorf("unknown lifecycle cause %q", b)
}

// LifeCauses returns every cause label, in order (for metrics).
func LifeCauses() []LifeCause {
	out := make([]LifeCause, numLifeCauses)
	for i := range out {
		out[i] = LifeCause(i)
	}
	return out
}

// DCStates returns every state, in order (for metrics).
func DCStates() []DCState { return []DCState{DCStateLive, DCStateDown, DCStateJoining} }

// RejoinMode is how a DC that missed bytes becomes live again.
type RejoinMode uint8

// Rejoin modes.
const (
	// RejoinCatchup (the default with a sequencer): a catch-up pass.
	RejoinCatchup RejoinMode = iota
	// RejoinManual: an operator's Admit.
	RejoinManual
	// RejoinTrust: reachability alone (misses are ignored), for backends
	// that are not a store (echo, iperf).
	RejoinTrust
)

// String returns "catchup", "manual" or "trust".
func (m RejoinMode) String() string {
	switch m {
	case RejoinCatchup:
		return "catchup"
	case RejoinManual:
		return "manual"
	case RejoinTrust:
		return "trust"
	}
	return fmt.Sprintf("RejoinMode(%d)", uint8(m))
}

// MarshalText returns the mode's name.
func (m RejoinMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses a mode's name (a flag or JSON field).
func (m *RejoinMode) UnmarshalText(b []byte) error {
	v, err := ParseRejoinMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// ParseRejoinMode parses "catchup", "manual" or "trust".
func ParseRejoinMode(s string) (RejoinMode, error) {
	switch s {
	case "catchup":
		return RejoinCatchup, nil
	case "manual":
		return RejoinManual, nil
	case "trust":
		return RejoinTrust, nil
	}
	return 0, fmt.Errorf("unknown rejoin mode %q (want catchup, manual or trust)", s)
}

// LifecycleConfig tunes the lifecycle. Zero fields take the defaults.
type LifecycleConfig struct {
	Mode RejoinMode
	// Margin (default DefaultRejoinMargin) bounds how long after its stamp
	// a write is stored at a DC, or never: cursors are set Margin behind
	// the clock, and a pass is clean only if no flow lacked the DC for
	// Margin before it started.
	Margin time.Duration
	// ResetAfter (default DefaultRejoinResetAfter; negative: never) is how
	// long after a DC's first completed pass the flows still lacking it
	// are reset.
	ResetAfter time.Duration
	// RetryAfter (default 1 s) is the pause before a failed job is tried
	// again.
	RetryAfter time.Duration
	// ProgressTimeout (default 5 s; PROGRESS comes every 500 ms) restarts
	// a job that has not reported for this long.
	ProgressTimeout time.Duration
	// VerifyEvery (default DefaultVerifyEvery) is the least time between
	// the starts of two verify passes of one DC (a verify pass reads both
	// whole stores). A DC that needs verify while the limit holds gets
	// plain passes, which do not admit it; the first Tick once the limit
	// allows restarts a running plain pass as a verify pass.
	VerifyEvery time.Duration
}

// Lifecycle defaults.
const (
	DefaultRejoinMargin     = 10 * time.Second
	DefaultRejoinResetAfter = 10 * time.Second
	DefaultRejoinRetry      = time.Second
	DefaultProgressTimeout  = 5 * time.Second
	DefaultVerifyEvery      = time.Minute
)

// MaxLifecycleDCs is the most DCs a Lifecycle tracks (callers keep a
// 64-bit mask of the DCs a flow lacks).
const MaxLifecycleDCs = 64

func (c LifecycleConfig) withDefaults() LifecycleConfig {
	if c.Margin == 0 {
		c.Margin = DefaultRejoinMargin
	}
	if c.ResetAfter == 0 {
		c.ResetAfter = DefaultRejoinResetAfter
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = DefaultRejoinRetry
	}
	if c.ProgressTimeout <= 0 {
		c.ProgressTimeout = DefaultProgressTimeout
	}
	if c.VerifyEvery == 0 {
		c.VerifyEvery = DefaultVerifyEvery
	}
	return c
}

// Validate reports a field that makes no sense.
func (c LifecycleConfig) Validate() error {
	if c.Mode > RejoinTrust {
		return fmt.Errorf("Mode: unknown rejoin mode %d", c.Mode)
	}
	if c.Margin < 0 {
		return fmt.Errorf("margin: %v is negative", c.Margin)
	}
	if c.VerifyEvery < 0 {
		return fmt.Errorf("verify every: %v is negative", c.VerifyEvery)
	}
	return nil
}

// Tag is a position in the sequencer's order: a record's tag {Counter: G,
// Writer: W}, compared G first.
type Tag struct {
	G uint64 `json:"g"`
	W uint64 `json:"w"`
}

// Less reports whether t orders before u.
func (t Tag) Less(u Tag) bool { return t.G < u.G || t.G == u.G && t.W < u.W }

func minTag(a, b Tag) Tag {
	if b.Less(a) {
		return b
	}
	return a
}

// JobState is a PROGRESS report's state (sequencer/orderwire's values).
type JobState uint8

// Job states.
const (
	JobRunning JobState = 1
	JobDone    JobState = 2
	JobFailed  JobState = 3
)

// Progress is one PROGRESS report of a catch-up job.
type Progress struct {
	Job       uint64
	State     JobState
	Keys      uint64
	Bytes     uint64
	Remaining uint64 // records left (estimate); ^0 unknown
	Cursor    Tag
}

// LifeEventKind is the kind of a LifeEvent.
type LifeEventKind uint8

// Event kinds.
const (
	// EvTransition: DC moved From -> To for Cause.
	EvTransition LifeEventKind = iota + 1
	// EvCatchup: send CATCHUP(Job, Cursor, Source) to one node of DC
	// (replacing any job it runs); with Verify, a verify pass that first
	// repairs every record at or below Bound (orderwire.CatchupVerify).
	EvCatchup
	// EvStop: send STOP(Job) to the node running it.
	EvStop
	// EvResetLacking: reset every forked flow that lacks DC.
	EvResetLacking
)

var lifeEventNames = [...]string{"", "transition", "catchup", "stop", "reset-lacking"}

func (k LifeEventKind) String() string {
	if k > 0 && int(k) < len(lifeEventNames) {
		return lifeEventNames[k]
	}
	return fmt.Sprintf("LifeEventKind(%d)", uint8(k))
}

// LifeEvent is one output of the Lifecycle.
type LifeEvent struct {
	Kind   LifeEventKind
	DC     DCID
	From   DCState   // EvTransition
	To     DCState   // EvTransition
	Cause  LifeCause // EvTransition
	Job    uint64    // EvCatchup, EvStop
	Source DCID      // EvCatchup
	Cursor Tag       // EvCatchup
	Verify bool      // EvCatchup: a verify pass
	Bound  uint64    // EvCatchup: the pass's start G minus Margin (records at or below it are repaired by a verify pass)
}

// LifeStats counts inputs the Lifecycle ignored; every field only grows.
type LifeStats struct {
	StaleProgress uint64 // PROGRESS of a job that is not the DC's current one
	BadInput      uint64 // unknown DC, cursor below the job's start, ...
	TimeWentBack  uint64
	Passes        uint64 // passes started
	VerifyPasses  uint64 // verify passes started (part of Passes)
	PassesDone    uint64 // passes completed (JobDone)
	JobsFailed    uint64
	JobsLost      uint64 // jobs restarted: their node went away or went silent
	Resets        uint64 // EvResetLacking emitted
	Transitions   [numDCStates][numLifeCauses]uint64
}

// job is a DC's current catch-up pass.
type job struct {
	id        uint64
	source    DCID
	start     time.Time // pass start
	from      Tag       // start cursor
	bound     uint64    // start G minus Margin: a verify pass repairs records at or below it
	verify    bool      // a verify pass
	divs      uint64    // the DC's divergences when it started
	clean     bool      // no flow lacked the DC (for Margin) at start, and nothing missed since
	last      time.Time // last PROGRESS (or start)
	reported  bool      // a PROGRESS arrived
	keys      uint64
	bytes     uint64
	remaining uint64
	rate      float64 // bytes/s, smoothed
	keyRate   float64 // keys/s, smoothed
}

type lifeDC struct {
	name      string
	state     DCState
	since     time.Time
	cause     LifeCause
	reachable bool
	// synced: the DC has missed nothing since it was last live (false from
	// the first miss until it is live again).
	synced  bool
	cursor  Tag       // out of sync since: every record it may lack is above cursor
	lacking int       // forked flows that lack it
	dirty   time.Time // last time a flow lacked it or it missed bytes
	job     *job
	retryAt time.Time // no job before this (after JobFailed)
	// firstDone is when the first pass since it joined completed (zero
	// before); resetAt when the flows lacking it are reset next.
	firstDone time.Time
	resetAt   time.Time
	passes    uint64
	lastDone  Progress // the last completed pass's totals
	// needVerify: it missed bytes for a divergence and no verify pass
	// started after the last one has completed; it is not admitted by a
	// pass until one has. divs counts its divergences (a pass that started
	// before the last one does not clear needVerify); verifyAt is when
	// its last verify pass started (zero: none yet), for VerifyEvery.
	needVerify   bool
	divs         uint64
	verifyAt     time.Time
	verifyPasses uint64
}

// NewLifecycle returns a Lifecycle for the DCs of topo, all live and
// reachable at now.
func NewLifecycle(cfg LifecycleConfig, topo []DC, now time.Time) (*Lifecycle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("failover: lifecycle: %w", err)
	}
	if err := ValidateTopology(topo); err != nil {
		return nil, fmt.Errorf("failover: topology: %w", err)
	}
	if len(topo) > MaxLifecycleDCs {
		return nil, fmt.Errorf("failover: lifecycle: %d DCs, at most %d", len(topo), MaxLifecycleDCs)
	}
	l := &Lifecycle{cfg: cfg.withDefaults(), now: now, nextJob: 1, out: make([]LifeEvent, 0, 8)}
	for _, dc := range topo {
		l.dcs = append(l.dcs, lifeDC{name: dc.Name, state: DCStateLive, since: now, cause: LifeStart, reachable: true, synced: true})
	}
	return l, nil
}

// Config returns the configuration in effect (defaults filled in).
func (l *Lifecycle) Config() LifecycleConfig { return l.cfg }

// NumDCs returns the number of DCs.
func (l *Lifecycle) NumDCs() int { return len(l.dcs) }

// State returns DC dc's state (0 for an unknown dc).
func (l *Lifecycle) State(dc DCID) DCState {
	if !l.valid(dc) {
		return 0
	}
	return l.dcs[dc].state
}

// Current reports whether dc is live.
func (l *Lifecycle) Current(dc DCID) bool { return l.State(dc) == DCStateLive }

// AnyCurrent reports whether some DC is live.
func (l *Lifecycle) AnyCurrent() bool {
	for i := range l.dcs {
		if l.dcs[i].state == DCStateLive {
			return true
		}
	}
	return false
}

// Stats returns the counters.
func (l *Lifecycle) Stats() LifeStats { return l.stats }

func (l *Lifecycle) valid(dc DCID) bool { return dc >= 0 && int(dc) < len(l.dcs) }

func (l *Lifecycle) advance(now time.Time) {
	l.out = l.out[:0]
	if now.Before(l.now) {
		l.stats.TimeWentBack++
		return
	}
	l.now = now
}

// gNow is the sequencer position at the latest time seen, as a lower
// bound: the sequencer hands out G >= wall-clock nanoseconds.
func (l *Lifecycle) gNow() uint64 {
	n := l.now.UnixNano()
	if n < 0 {
		return 0
	}
	return uint64(n)
}

// behind returns g minus the margin (0 below it).
func (l *Lifecycle) behind(g uint64) uint64 {
	m := uint64(l.cfg.Margin)
	if g < m {
		return 0
	}
	return g - m
}

func (l *Lifecycle) transition(dc DCID, to DCState, cause LifeCause) {
	d := &l.dcs[dc]
	from := d.state
	if from == to {
		return
	}
	d.state, d.since, d.cause = to, l.now, cause
	l.stats.Transitions[to][cause]++
	l.out = append(l.out, LifeEvent{Kind: EvTransition, DC: dc, From: from, To: to, Cause: cause})
	if to == DCStateLive || to == DCStateJoining {
		d.firstDone, d.resetAt, d.retryAt = time.Time{}, time.Time{}, time.Time{}
	}
	if to == DCStateLive {
		d.synced, d.needVerify = true, false
	}
	if to != DCStateJoining {
		l.stopJob(dc)
	}
	if from == DCStateLive || to == DCStateLive {
		// A source came or went: jobs that read from a DC no longer
		// live move to another one; jobs waiting for a source start.
		for j := range l.dcs {
			if jd := &l.dcs[j]; DCID(j) != dc && jd.state == DCStateJoining && (jd.job == nil || jd.job.source == dc) {
				l.restartJob(DCID(j))
			}
		}
	}
}

// stopJob stops dc's job, if any (EvStop).
func (l *Lifecycle) stopJob(dc DCID) {
	d := &l.dcs[dc]
	if d.job == nil {
		return
	}
	l.out = append(l.out, LifeEvent{Kind: EvStop, DC: dc, Job: d.job.id})
	d.job = nil
}

// restartJob stops dc's job and starts a new pass if dc is joining, the
// mode catches up, a source is live and no retry is pending. The new pass
// is a verify pass if dc needs one and VerifyEvery allows it.
func (l *Lifecycle) restartJob(dc DCID) {
	l.stopJob(dc)
	d := &l.dcs[dc]
	if l.cfg.Mode != RejoinCatchup || d.state != DCStateJoining || l.now.Before(d.retryAt) {
		return
	}
	src := DCID(-1)
	for i := range l.dcs {
		if DCID(i) != dc && l.dcs[i].state == DCStateLive {
			src = DCID(i)
			break
		}
	}
	if src < 0 {
		return
	}
	clean := d.lacking == 0 && !l.now.Before(d.dirty.Add(l.cfg.Margin))
	verify := d.needVerify && l.verifyAllowed(d)
	d.job = &job{id: l.nextJob, source: src, start: l.now, from: d.cursor, bound: l.behind(l.gNow()), verify: verify, divs: d.divs,
		clean: clean, last: l.now, remaining: ^uint64(0)}
	l.nextJob++
	d.passes++
	l.stats.Passes++
	if verify {
		d.verifyAt = l.now
		d.verifyPasses++
		l.stats.VerifyPasses++
	}
	l.out = append(l.out, LifeEvent{Kind: EvCatchup, DC: dc, Job: d.job.id, Source: src, Cursor: d.cursor, Verify: verify, Bound: d.job.bound})
}

// verifyAllowed reports whether VerifyEvery allows d a verify pass now.
func (l *Lifecycle) verifyAllowed(d *lifeDC) bool {
	return d.verifyAt.IsZero() || !l.now.Before(d.verifyAt.Add(l.cfg.VerifyEvery))
}

// verifyDue reports whether d's running pass is a plain one that should
// give way to a verify pass now.
func (l *Lifecycle) verifyDue(d *lifeDC) bool {
	return d.job != nil && !d.job.verify && d.needVerify && l.verifyAllowed(d)
}

// missed records that dc missed bytes at now: out of sync since at most
// low (the lowest position not known to be held), and its running pass
// is no longer clean.
func (l *Lifecycle) missed(dc DCID, low uint64) {
	d := &l.dcs[dc]
	c := Tag{G: min(low, l.behind(l.gNow()))}
	if d.synced {
		d.cursor, d.synced = c, false
	} else {
		d.cursor = minTag(d.cursor, c)
	}
	d.dirty = l.now
	if d.job != nil {
		d.job.clean = false
	}
}

// DCStateDown reports that dc became unreachable (the detector's DCStateDown) at
// now. low is the lowest sequencer position the middlebox still retains
// unacknowledged by dc's branches (^0 for none): the cursor is at most
// low-1 and at most Margin behind now.
func (l *Lifecycle) DCDown(now time.Time, dc DCID, low uint64) []LifeEvent {
	l.advance(now)
	if !l.valid(dc) {
		l.stats.BadInput++
		return l.out
	}
	d := &l.dcs[dc]
	d.reachable = false
	if l.cfg.Mode != RejoinTrust {
		l.missed(dc, dec1(low))
	}
	l.transition(dc, DCStateDown, LifeCut)
	return l.out
}

func dec1(g uint64) uint64 {
	if g == 0 {
		return 0
	}
	return g - 1
}

// DCUp reports that dc became reachable again (the detector's DCUp).
// A DC that missed nothing is live at once; one that did is joining
// (RejoinTrust: live).
func (l *Lifecycle) DCUp(now time.Time, dc DCID) []LifeEvent {
	l.advance(now)
	if !l.valid(dc) {
		l.stats.BadInput++
		return l.out
	}
	d := &l.dcs[dc]
	d.reachable = true
	if d.state != DCStateDown {
		return l.out
	}
	if l.cfg.Mode == RejoinTrust || d.synced {
		l.transition(dc, DCStateLive, LifeHealed)
		return l.out
	}
	l.transition(dc, DCStateJoining, LifeHealed)
	l.restartJob(dc)
	return l.out
}

// Missed reports that dc missed bytes while reachable: a branch to it was
// removed from a forked flow that goes on without it, or it was left out
// of a flow's handshake. low is as for DCStateDown. A live DC becomes joining;
// a joining DC's running pass is no longer clean. Cause LifeDivergence
// (also a reply mismatch) of a live DC makes it need a verify pass: it
// answered otherwise while counted current. A joining DC's replies are
// expected to differ (it lacks what it has not caught up yet, and forked
// reads of those keys drop it from their flows), so its divergences add
// no verify pass; counting them kept a DC read through the forked port
// joining for a verify pass per VerifyEvery. Ignored in RejoinTrust.
func (l *Lifecycle) Missed(now time.Time, dc DCID, cause LifeCause, low uint64) []LifeEvent {
	l.advance(now)
	if !l.valid(dc) || cause >= numLifeCauses {
		l.stats.BadInput++
		return l.out
	}
	if l.cfg.Mode == RejoinTrust {
		return l.out
	}
	l.missed(dc, dec1(low))
	if cause == LifeDivergence && l.dcs[dc].state == DCStateLive {
		d := &l.dcs[dc]
		d.needVerify = true
		d.divs++
	}
	if l.dcs[dc].state == DCStateLive {
		l.transition(dc, DCStateJoining, cause)
		l.restartJob(dc)
	}
	return l.out
}

// SetLacking reports how many forked flows lack dc (opened while it was
// down, or whose branch to it was removed). While any does, dc's passes
// are not clean.
func (l *Lifecycle) SetLacking(now time.Time, dc DCID, n int) []LifeEvent {
	l.advance(now)
	if !l.valid(dc) || n < 0 {
		l.stats.BadInput++
		return l.out
	}
	d := &l.dcs[dc]
	if n > 0 || d.lacking > 0 {
		d.dirty = l.now
	}
	if n > 0 && d.job != nil {
		d.job.clean = false
	}
	d.lacking = n
	return l.out
}

// Progress applies a PROGRESS report for dc's job. Reports of another job
// are counted and ignored. The cursor moves only up, never past the
// report's cursor, and never past Margin before the pass's start (a
// record stamped later may have reached the source after the scan passed
// it). JobDone of a verify pass clears dc's need of one unless a
// divergence was reported since it started. JobDone of a clean pass makes
// dc live unless dc needs verify; of another pass it starts the next pass.
// JobFailed retries after RetryAfter.
func (l *Lifecycle) Progress(now time.Time, dc DCID, p Progress) []LifeEvent {
	l.advance(now)
	if !l.valid(dc) {
		l.stats.BadInput++
		return l.out
	}
	d := &l.dcs[dc]
	j := d.job
	if j == nil || p.Job != j.id {
		l.stats.StaleProgress++
		return l.out
	}
	if p.State < JobRunning || p.State > JobFailed {
		l.stats.BadInput++
		return l.out
	}
	if dt := l.now.Sub(j.last).Seconds(); dt > 0 && p.Bytes >= j.bytes && p.Keys >= j.keys {
		r, kr := float64(p.Bytes-j.bytes)/dt, float64(p.Keys-j.keys)/dt
		if j.rate == 0 && j.keyRate == 0 {
			j.rate, j.keyRate = r, kr
		} else {
			j.rate, j.keyRate = 0.7*j.rate+0.3*r, 0.7*j.keyRate+0.3*kr
		}
	}
	j.last, j.reported = l.now, true
	j.keys, j.bytes, j.remaining = p.Keys, p.Bytes, p.Remaining
	if !p.Cursor.Less(j.from) {
		lim := Tag{G: l.behind(uint64(max(j.start.UnixNano(), 0)))}
		if c := minTag(p.Cursor, lim); d.cursor.Less(c) {
			d.cursor = c
		}
	} else {
		l.stats.BadInput++
	}
	switch p.State {
	case JobDone:
		l.stats.PassesDone++
		d.lastDone = p
		d.job = nil
		if j.verify && j.divs == d.divs {
			d.needVerify = false
		}
		if j.clean && d.lacking == 0 && !d.needVerify {
			l.transition(dc, DCStateLive, LifeCaughtUp)
			return l.out
		}
		if d.firstDone.IsZero() {
			d.firstDone = l.now
			if l.cfg.ResetAfter > 0 {
				d.resetAt = l.now.Add(l.cfg.ResetAfter)
			}
		}
		// The next pass: once the flows lacking dc are gone for Margin
		// (it will be clean then), or after RetryAfter while some remain
		// (a change feed).
		d.retryAt = l.now.Add(l.cfg.RetryAfter)
		if ready := d.dirty.Add(l.cfg.Margin); d.lacking == 0 && ready.After(l.now) {
			d.retryAt = ready
		}
		l.restartJob(dc) // a no-op until retryAt: Tick starts it
	case JobFailed:
		l.stats.JobsFailed++
		d.job = nil
		d.retryAt = l.now.Add(l.cfg.RetryAfter)
	}
	return l.out
}

// JobLost reports that the node running dc's job went away (its order
// stream dropped): the job restarts as a new pass from the last cursor,
// to be sent to another node, at once if the job had reported progress,
// else after RetryAfter (a node that drops the stream on CATCHUP, e.g.
// one without catch-up support, is not asked again and again).
func (l *Lifecycle) JobLost(now time.Time, dc DCID, jobID uint64) []LifeEvent {
	l.advance(now)
	if !l.valid(dc) {
		l.stats.BadInput++
		return l.out
	}
	if j := l.dcs[dc].job; j != nil && j.id == jobID {
		l.stats.JobsLost++
		if !j.reported {
			l.stopJob(dc)
			l.dcs[dc].retryAt = l.now.Add(l.cfg.RetryAfter)
			return l.out
		}
		l.restartJob(dc)
	}
	return l.out
}

// ErrNotManual is Admit's error outside RejoinManual.
var ErrNotManual = errors.New("not in manual rejoin mode")

// Admit makes joining DC dc live on an operator's word: in RejoinManual
// mode, or in RejoinCatchup mode when no DC is live (nothing to catch up
// from). It clears dc's need of a verify pass (the operator trusts it).
func (l *Lifecycle) Admit(now time.Time, dc DCID) ([]LifeEvent, error) {
	l.advance(now)
	if !l.valid(dc) {
		l.stats.BadInput++
		return l.out, fmt.Errorf("unknown DC %d", dc)
	}
	switch {
	case l.cfg.Mode == RejoinManual:
	case l.cfg.Mode == RejoinCatchup && !l.AnyCurrent():
		// No live DC to catch up from (every DC was lost at once): only
		// an operator can say which one to trust.
	default:
		return l.out, fmt.Errorf("%w: the rejoin mode is %s (a joining DC is admitted by a clean catch-up pass; admit is allowed only when no DC is live)", ErrNotManual, l.cfg.Mode)
	}
	switch l.dcs[dc].state {
	case DCStateLive:
		return l.out, nil
	case DCStateDown:
		return l.out, fmt.Errorf("DC %s is down (unreachable)", l.dcs[dc].name)
	}
	l.transition(dc, DCStateLive, LifeAdmitted)
	return l.out, nil
}

// Tick runs the timers: a job silent for ProgressTimeout is restarted, a
// job that failed is retried after RetryAfter, a plain pass of a DC that
// needs verify is restarted as a verify pass once VerifyEvery allows one,
// and flows lacking a DC are reset ResetAfter after its first completed
// pass (again every ResetAfter while some remain).
func (l *Lifecycle) Tick(now time.Time) []LifeEvent {
	l.advance(now)
	for i := range l.dcs {
		d := &l.dcs[i]
		if d.state != DCStateJoining {
			continue
		}
		dc := DCID(i)
		switch {
		case d.job != nil && l.now.Sub(d.job.last) >= l.cfg.ProgressTimeout:
			l.stats.JobsLost++
			l.restartJob(dc)
		case l.verifyDue(d):
			// The plain pass cannot admit dc; its reported progress is in
			// the cursor, which the verify pass starts from.
			l.restartJob(dc)
		case d.job == nil:
			l.restartJob(dc)
		}
		if !d.resetAt.IsZero() && !l.now.Before(d.resetAt) {
			if d.lacking > 0 {
				l.stats.Resets++
				l.out = append(l.out, LifeEvent{Kind: EvResetLacking, DC: dc})
			}
			d.resetAt = l.now.Add(max(l.cfg.ResetAfter, time.Second))
		}
	}
	return l.out
}

// LifeStatus is a snapshot of one DC, for /dcs.
type LifeStatus struct {
	Name         string     `json:"name"`
	State        DCState    `json:"state"`
	Since        time.Time  `json:"since"`
	Cause        LifeCause  `json:"cause"`
	Reachable    bool       `json:"reachable"`
	InSync       bool       `json:"in_sync"`
	Cursor       Tag        `json:"cursor"`
	FlowsLacking int        `json:"flows_lacking"`
	Passes       uint64     `json:"passes"`
	VerifyPasses uint64     `json:"verify_passes"`
	NeedsVerify  bool       `json:"needs_verify"` // missed bytes for a divergence; no pass admits it before a verify pass started since has completed
	Job          *JobStatus `json:"job,omitempty"`
	LastPass     *Progress  `json:"last_pass,omitempty"`
}

// JobStatus is a running pass's progress.
type JobStatus struct {
	Job         uint64        `json:"job"`
	Source      string        `json:"source"`
	Started     time.Time     `json:"started"`
	From        Tag           `json:"from"`
	Verify      bool          `json:"verify"` // a verify pass
	Bound       uint64        `json:"bound"`  // start G minus Margin: a verify pass repairs records at or below it
	Clean       bool          `json:"clean"`
	Keys        uint64        `json:"keys"`
	Bytes       uint64        `json:"bytes"`
	Remaining   int64         `json:"remaining"` // -1 unknown
	BytesPerSec float64       `json:"bytes_per_sec"`
	KeysPerSec  float64       `json:"keys_per_sec"`
	ETA         time.Duration `json:"eta_ns"` // -1 unknown
}

// Status returns a snapshot of dc.
func (l *Lifecycle) Status(dc DCID) (LifeStatus, bool) {
	if !l.valid(dc) {
		return LifeStatus{}, false
	}
	d := &l.dcs[dc]
	s := LifeStatus{Name: d.name, State: d.state, Since: d.since, Cause: d.cause, Reachable: d.reachable,
		InSync: d.synced, Cursor: d.cursor, FlowsLacking: d.lacking, Passes: d.passes, VerifyPasses: d.verifyPasses, NeedsVerify: d.needVerify}
	if d.synced {
		s.Cursor = Tag{}
	}
	if d.lastDone.Job != 0 {
		p := d.lastDone
		s.LastPass = &p
	}
	if j := d.job; j != nil {
		js := &JobStatus{Job: j.id, Source: l.dcs[j.source].name, Started: j.start, From: j.from, Verify: j.verify, Bound: j.bound, Clean: j.clean,
			Keys: j.keys, Bytes: j.bytes, Remaining: -1, BytesPerSec: j.rate, KeysPerSec: j.keyRate, ETA: -1}
		if j.remaining != ^uint64(0) {
			js.Remaining = int64(min(j.remaining, 1<<62))
			if j.keyRate > 0 {
				js.ETA = time.Duration(float64(js.Remaining) / j.keyRate * float64(time.Second))
			}
		}
		s.Job = js
	}
	return s, true
}

// LifeJob is a DC's running catch-up pass, as JobOf returns it.
type LifeJob struct {
	ID     uint64
	Source DCID
	From   Tag    // start cursor
	Verify bool   // a verify pass
	Bound  uint64 // start G minus Margin
}

// JobOf returns dc's running job (false: none).
func (l *Lifecycle) JobOf(dc DCID) (LifeJob, bool) {
	if !l.valid(dc) || l.dcs[dc].job == nil {
		return LifeJob{Source: -1}, false
	}
	j := l.dcs[dc].job
	return LifeJob{ID: j.id, Source: j.source, From: j.from, Verify: j.verify, Bound: j.bound}, true
}
