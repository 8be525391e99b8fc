package middlebox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// The DC lifecycle's driver (docs/design-lifecycle.md, "Middlebox side"):
// the pure failover.Lifecycle decides, this file feeds it and carries
// out its events.
//
//	node liveness (detector, SetNodeLive) ── reachability per DC ──┐
//	forked flows: branch removed, flow lacking a DC ───────────────┤
//	order streams: PROGRESS, stream down ──────────────────────────┼─► failover.Lifecycle
//	control API: POST /dcs/NAME/admit, timer pass: Tick ────────────┘        │
//	   log + metrics + detector.SetCurrent + persist ◄── transitions ────────┤
//	   CATCHUP / STOP to one node of the joining DC ◄── jobs ──────────────────┤
//	   RST of the flows lacking the DC ◄── reset-lacking ──────────────────────┘
//
// The Lifecycle and everything here but the persister is guarded by
// Middlebox.flows.

// LifecycleConfig turns on the DC lifecycle: a DC that missed bytes
// (cut, or dropped from a forked flow that went on without it) is
// "joining" until it has caught up (or is admitted, or, in trust mode,
// is reachable again); anycast chooses only live DCs; new connections
// are refused while no DC is live.
type LifecycleConfig struct {
	failover.LifecycleConfig
	// StatePath is the file the lifecycle state is kept in (written with
	// fsync and rename, restored at start); "" keeps it in memory only.
	StatePath string
	// StateLost starts with every DC joining whatever StatePath holds:
	// the recovery when the file is damaged, or missing while the
	// sequencer's state file exists (see lifeRestore).
	StateLost bool
}

// lifecycle is the driver's state, under Middlebox.flows.
type lifecycle struct {
	cfg      LifecycleConfig
	m        *failover.Lifecycle
	reach    []bool   // last reachability reported per DC
	lacking  []int    // forked flows lacking each DC
	jobNode  []int    // node running each DC's job (-1 none yet)
	lastNode []int    // node that ran each DC's previous job (-1 none): the next pass goes there first, to reuse its source connection
	jobID    []uint64 // each DC's current job (0 none)
	jobFrom  []failover.Tag
	jobSrc   []failover.DCID
	jobVer   []bool   // each DC's current job is a verify pass
	jobBound []uint64 // and its bound (start G minus margin)

	refused     atomic.Uint64 // new connections refused: no current DC
	resets      atomic.Uint64 // flows reset because they lacked a joining DC
	persistErrs atomic.Uint64
	dirty       atomic.Bool // state changed since the last write
	failing     atomic.Bool // the last write failed (logged once until one succeeds)

	wake   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	frame  orderwire.Frame
}

// startLifecycle makes the Lifecycle, restores the persisted state and
// starts the persister. Called from New before the data path runs.
func (m *Middlebox) startLifecycle() error {
	cfg := *m.cfg.Lifecycle
	now := m.cfg.Now()
	lm, err := failover.NewLifecycle(cfg.LifecycleConfig, m.dcs, now)
	if err != nil {
		return err
	}
	n := len(m.dcs)
	l := &lifecycle{cfg: cfg, m: lm, reach: make([]bool, n), lacking: make([]int, n), jobNode: make([]int, n), lastNode: make([]int, n),
		jobID: make([]uint64, n), jobFrom: make([]failover.Tag, n), jobSrc: make([]failover.DCID, n), jobVer: make([]bool, n), jobBound: make([]uint64, n),
		wake: make(chan struct{}, 1)}
	for i := range n {
		l.reach[i], l.jobNode[i], l.lastNode[i] = true, -1, -1
	}
	m.life = l
	if cfg.StatePath != "" {
		if err := m.lifeRestore(now); err != nil {
			return err
		}
	}
	m.flows.Lock()
	m.syncReach(now)
	m.flows.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	if cfg.StatePath != "" {
		l.dirty.Store(true)
		l.wg.Go(func() { m.lifePersister(ctx) })
	}
	m.log.Info("lifecycle started", "rejoin", cfg.Mode, "margin", lm.Config().Margin, "reset_after", lm.Config().ResetAfter,
		"verify_every", lm.Config().VerifyEvery, "state", cfg.StatePath)
	return nil
}

// lifeRecovery is the recovery that lifeRestore's errors name.
const lifeRecovery = "to start with every DC joining (out of sync, none trusted) and then admit the DC to trust with POST /dcs/NAME/admit, restart with --rejoin-state-lost"

// lifeRestore restores the persisted state at start. A damaged or
// unreadable file stops the start; so does a missing one when the
// sequencer's state file exists, as the lifecycle state is written within
// 100 ms of the first start: it was lost, and trusting every DC as current
// could serve reads from a stale one. Both errors name the file and the
// recovery (StateLost: every DC joining). A missing file without sequencer
// state is a first start: every DC live.
func (m *Middlebox) lifeRestore(now time.Time) error {
	path := m.life.cfg.StatePath
	var evs []failover.LifeEvent
	if m.life.cfg.StateLost {
		evs = m.life.m.ImportLost(now)
		m.log.Warn("lifecycle state ignored (--rejoin-state-lost): every DC starts joining; admit the one to trust with POST /dcs/NAME/admit", "path", path)
	} else {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if sc := m.cfg.Sequencing; sc != nil && sc.StatePath != "" {
				if _, serr := os.Stat(sc.StatePath); serr == nil {
					return fmt.Errorf("middlebox: lifecycle state %s is missing while the sequencer state %s exists: this is not a first start and which DCs are current is lost; %s", path, sc.StatePath, lifeRecovery)
				}
			}
			return nil // a first start
		case err != nil:
			return fmt.Errorf("middlebox: lifecycle state %s: %w; %s", path, err, lifeRecovery)
		}
		st, err := failover.ParseLifecycleState(b)
		if err != nil {
			return fmt.Errorf("middlebox: lifecycle state %s is damaged: %w; %s", path, err, lifeRecovery)
		}
		evs = m.life.m.Import(now, st)
	}
	m.flows.Lock()
	m.lifeApply(evs)
	m.flows.Unlock()
	return nil
}

func (m *Middlebox) stopLifecycle() {
	if m.life != nil && m.life.cancel != nil {
		m.life.cancel()
		m.life.wg.Wait()
		if m.life.cfg.StatePath != "" {
			m.lifePersist() // the last state
		}
	}
}

// lifePersister writes the state whenever it changed, at most every
// 100 ms, off the data path.
func (m *Middlebox) lifePersister(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.life.wake:
		}
		if m.life.dirty.Swap(false) {
			m.lifePersist()
		}
	}
}

// lifePersist writes the state file: temp file, fsync, rename, fsync of
// the directory.
func (m *Middlebox) lifePersist() {
	m.flows.Lock()
	b, err := m.life.m.MarshalState()
	m.flows.Unlock()
	if err == nil {
		err = writeFileSync(m.life.cfg.StatePath, b)
	}
	if err != nil {
		m.life.persistErrs.Add(1)
		m.life.dirty.Store(true)
		if !m.life.failing.Swap(true) {
			m.log.Error("lifecycle state not persisted (retried every 100 ms, logged once)", "path", m.life.cfg.StatePath, "err", err)
		}
		return
	}
	if m.life.failing.Swap(false) {
		m.log.Info("lifecycle state persisted again", "path", m.life.cfg.StatePath)
	}
}

func writeFileSync(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".lifecycle-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// lifeChanged marks the state for the persister.
func (m *Middlebox) lifeChanged() {
	if m.life.cfg.StatePath == "" {
		return
	}
	m.life.dirty.Store(true)
	select {
	case m.life.wake <- struct{}{}:
	default:
	}
}

// lifeApply carries out the Lifecycle's events (under flows). Events
// that reset flows need the timer pass's buffers: they come only from
// Tick (lifeTick).
func (m *Middlebox) lifeApply(evs []failover.LifeEvent) {
	l := m.life
	for _, e := range evs {
		name := m.dcs[e.DC].Name
		switch e.Kind {
		case failover.EvTransition:
			m.log.Warn("dc lifecycle", "dc", name, "from", e.From.String(), "to", e.To.String(), "cause", e.Cause.String())
			if m.flows.det != nil {
				m.flows.det.SetCurrent(e.DC, e.To == failover.DCStateLive)
			}
			if e.From == failover.DCStateLive {
				m.wakeReset() // its anycast flows read stale data from now on: reset them
			}
			m.lifeChanged()
		case failover.EvCatchup:
			l.jobID[e.DC], l.jobFrom[e.DC], l.jobSrc[e.DC], l.jobNode[e.DC] = e.Job, e.Cursor, e.Source, -1
			l.jobVer[e.DC], l.jobBound[e.DC] = e.Verify, e.Bound
			m.lifeAssign(e.DC)
			m.lifeChanged()
		case failover.EvStop:
			if ni := l.jobNode[e.DC]; ni >= 0 && l.jobID[e.DC] == e.Job && m.seq != nil {
				l.frame = orderwire.Frame{Type: orderwire.Stop, Job: e.Job}
				o := m.seq.conns[ni]
				o.push(&l.frame)
				o.flush()
			}
			if l.jobID[e.DC] == e.Job {
				l.jobID[e.DC], l.jobNode[e.DC] = 0, -1
			}
		case failover.EvResetLacking:
			m.lifeResetLacking(e.DC)
		}
	}
}

// lifeAssign sends DC dc's pending job to one of its live nodes with an
// order stream up (under flows); with none, the timer pass tries again.
func (m *Middlebox) lifeAssign(dc failover.DCID) {
	l := m.life
	if l.jobID[dc] == 0 || l.jobNode[dc] >= 0 || m.seq == nil {
		return
	}
	// The node of the previous pass first: it keeps its connection to the
	// source warm between passes (kvs/catchup_conn.go).
	order := m.dcNode[dc]
	if last := l.lastNode[dc]; last >= 0 {
		order = append([]uint16{uint16(last)}, order...)
	}
	for _, ni := range order {
		o := m.seq.conns[ni]
		if !m.nodes[ni].live.Load() || !o.up.Load() {
			continue
		}
		l.frame = orderwire.Frame{Type: orderwire.Catchup, Job: l.jobID[dc], G: l.jobFrom[dc].G, W: l.jobFrom[dc].W}
		if l.jobVer[dc] {
			// A verify pass: the node first repairs every record at or
			// below Bound to the source's (docs/design-lifecycle.md,
			// "Verify pass").
			l.frame.Flags, l.frame.Bound = orderwire.CatchupVerify, l.jobBound[dc]
		}
		if l.frame.SetSource(m.dcs[l.jobSrc[dc]].Name) != nil || !o.push(&l.frame) {
			continue
		}
		o.flush()
		l.jobNode[dc], l.lastNode[dc] = int(ni), int(ni)
		m.log.Info("dc catch-up job", "dc", m.dcs[dc].Name, "job", l.jobID[dc], "node", m.nodes[ni].ap, "source", m.dcs[l.jobSrc[dc]].Name, "cursor_g", l.jobFrom[dc].G,
			"verify", l.jobVer[dc], "bound", l.jobBound[dc])
		return
	}
}

// lifeProgress applies a PROGRESS frame from node ni (the order stream's
// reader goroutine).
func (m *Middlebox) lifeProgress(ni uint16, f *orderwire.Frame) {
	m.flows.Lock()
	defer m.flows.Unlock()
	dc := failover.DCID(m.nodes[ni].dc)
	p := failover.Progress{Job: f.Job, State: failover.JobState(f.State), Keys: f.Keys, Bytes: f.Bytes, Remaining: f.Remaining, Cursor: failover.Tag{G: f.G, W: f.W}}
	m.lifeApply(m.life.m.Progress(m.cfg.Now(), dc, p))
	m.lifeChanged() // the cursor, for a restart to resume from
}

// lifeOrderDown is called when node ni's order stream went down: a job
// it ran moves to another node of its DC.
func (m *Middlebox) lifeOrderDown(ni uint16) {
	m.flows.Lock()
	defer m.flows.Unlock()
	dc := failover.DCID(m.nodes[ni].dc)
	if m.life.jobNode[dc] == int(ni) {
		m.life.jobNode[dc] = -1
		m.lifeApply(m.life.m.JobLost(m.cfg.Now(), dc, m.life.jobID[dc]))
	}
}

// lifeTick runs the Lifecycle's timers and retries unassigned jobs
// (timer pass, under timers and flows).
func (m *Middlebox) lifeTick(now time.Time) {
	m.syncReach(now)
	m.lifeApply(m.life.m.Tick(now))
	for dc := range m.dcs {
		m.lifeAssign(failover.DCID(dc))
	}
}

// syncReach reports DCs whose reachability (some live node) changed
// (under flows).
func (m *Middlebox) syncReach(now time.Time) {
	l := m.life
	for d := range m.dcs {
		up := false
		for _, ni := range m.dcNode[d] {
			up = up || m.nodes[ni].live.Load()
		}
		if up == l.reach[d] {
			continue
		}
		l.reach[d] = up
		if up {
			m.lifeApply(l.m.DCUp(now, failover.DCID(d)))
		} else {
			m.lifeApply(l.m.DCDown(now, failover.DCID(d), m.lowRetained(d, -1)))
		}
	}
}

// lowRetained is the lowest sequencer position still retained by the
// sequenced flows with a branch in DC d (only flow i when i >= 0), ^0 for
// none (under flows).
func (m *Middlebox) lowRetained(d int, i int32) uint64 {
	low := ^uint64(0)
	s := m.seq
	if s == nil {
		return low
	}
	visit := func(i int) {
		if i >= len(s.on) || !s.on[i] {
			return
		}
		f := &m.flows.tab.slab[i]
		for j := range int(f.nbranch) {
			if m.nodes[f.nodes[j]].dc == d {
				for _, r := range s.flows[i].Ranges() {
					low = min(low, r.G)
				}
				return
			}
		}
	}
	if i >= 0 {
		visit(int(i))
		return low
	}
	for k := range s.on {
		visit(k)
	}
	return low
}

// lifeCause maps a branch removal's cause to the lifecycle's.
func lifeCause(c ackmerge.Cause) failover.LifeCause {
	switch c {
	case ackmerge.CauseRST:
		return failover.LifeRST
	case ackmerge.CauseLagged:
		return failover.LifeLagged
	case ackmerge.CauseHandshakeTimeout:
		return failover.LifeHandshake
	case ackmerge.CauseDivergence, ackmerge.CauseReplyMismatch:
		return failover.LifeDivergence
	}
	return failover.LifeBranchDown
}

// lifeFlowLacks records that forked flow i lacks the DCs in mask (under
// flows).
func (m *Middlebox) lifeFlowLacks(i int32, mask uint64, now time.Time) {
	f := &m.flows.tab.slab[i]
	add := mask &^ f.lacks
	if add == 0 {
		return
	}
	f.lacks |= add
	for d := range m.dcs {
		if add&(1<<d) != 0 {
			m.life.lacking[d]++
			m.lifeApply(m.life.m.SetLacking(now, failover.DCID(d), m.life.lacking[d]))
		}
	}
}

// lifeFlowGone forgets flow i's lacks (it is being removed; under flows).
func (m *Middlebox) lifeFlowGone(i int32) {
	f := &m.flows.tab.slab[i]
	if f.lacks == 0 {
		return
	}
	now := m.cfg.Now()
	for d := range m.dcs {
		if f.lacks&(1<<d) != 0 {
			m.life.lacking[d]--
			m.lifeApply(m.life.m.SetLacking(now, failover.DCID(d), m.life.lacking[d]))
		}
	}
	f.lacks = 0
}

// lifeBranchesRemoved handles the branches of forked flow i that the
// fork removed (mask of branch indexes, causes per branch) once its
// events are applied (under flows): if the flow goes on, the removed
// branches' DCs missed bytes and the flow lacks them; if no remaining
// branch is on a live (current) DC, the flow is reset instead, so that
// no byte is acknowledged by stale DCs alone. It reports whether the
// flow must be reset.
func (m *Middlebox) lifeBranchesRemoved(i int32, removed uint8, causes *[MaxBranches]ackmerge.Cause, now time.Time) (reset bool) {
	f := &m.flows.tab.slab[i]
	if !f.used || f.fork == nil {
		return false
	}
	if st := f.fork.State(); st != ackmerge.StateEstablished && st != ackmerge.StateSynSent {
		return false // reset, done, or closed and acknowledged: nothing more to miss
	}
	if f.fork.Live() == 0 {
		return false
	}
	l := m.life
	if l.m.Config().Mode != failover.RejoinTrust {
		current := false
		for j := range int(f.nbranch) {
			if f.gone&(1<<j) == 0 && l.m.Current(failover.DCID(m.nodes[f.nodes[j]].dc)) {
				current = true
			}
		}
		if !current {
			return true
		}
	}
	var mask uint64
	for j := range int(f.nbranch) {
		if removed&(1<<j) == 0 {
			continue
		}
		d := m.nodes[f.nodes[j]].dc
		mask |= 1 << d
		m.lifeApply(l.m.Missed(now, failover.DCID(d), lifeCause(causes[j]), m.lowRetained(d, i)))
	}
	m.lifeFlowLacks(i, mask, now)
	return false
}

// lifeResetLacking resets every forked flow that lacks DC dc (timer
// pass, under timers and flows): their clients reconnect and get a flow
// that includes it.
func (m *Middlebox) lifeResetLacking(dc failover.DCID) {
	t := m.flows.tab
	n := 0
	for i := range t.slab {
		f := &t.slab[i]
		if !f.used || f.kind != kindForked || f.lacks&(1<<dc) == 0 {
			continue
		}
		m.resetForked(int32(i), m.cfg.Now())
		n++
	}
	m.life.resets.Add(uint64(n))
	m.log.Warn("dc lifecycle: reset flows lacking a joining DC", "dc", m.dcs[dc].Name, "flows", n)
}

// resetForked resets forked flow i's client by removing every live branch
// (timer pass, under timers and flows).
func (m *Middlebox) resetForked(i int32, now time.Time) {
	f := &m.flows.tab.slab[i]
	tm := &m.timers
	for j := range int(f.nbranch) {
		if !f.used {
			return
		}
		if f.gone&(1<<j) != 0 {
			continue
		}
		if len(tm.pool.free) < m.timers.reserve {
			m.flushTimerOutput()
		}
		f.fork.RemoveBranch(j, ackmerge.CauseFailover, now, &tm.out)
		tm.outs = m.drainFork(i, &tm.out, tm.outs)
	}
}

// lifeAnycastOK reports whether DC d may serve a new anycast flow, and
// lifeRefuse whether a new flow must be refused (no live DC).
func (m *Middlebox) lifeAnycastOK(d int) bool {
	return m.life == nil || m.life.m.Current(failover.DCID(d))
}

// A DC is reachable but none is live: refuse (with nothing reachable,
// the reason stays no_live_node).
func (m *Middlebox) lifeRefuse() bool {
	if m.life == nil || m.life.m.AnyCurrent() {
		return false
	}
	for _, up := range m.life.reach {
		if up {
			return true
		}
	}
	return false
}

// ErrAdmit is AdmitDC's error for a DC that cannot be admitted.
var ErrAdmit = errors.New("middlebox: admit")

// AdmitDC makes joining DC name live on an operator's word (rejoin mode
// manual, or catchup when no DC is live).
func (m *Middlebox) AdmitDC(name string) error {
	if m.life == nil {
		return fmt.Errorf("%w: no DC lifecycle (rejoin trust)", ErrAdmit)
	}
	m.flows.Lock()
	defer m.flows.Unlock()
	for d := range m.dcs {
		if m.dcs[d].Name == name {
			evs, err := m.life.m.Admit(m.cfg.Now(), failover.DCID(d))
			m.lifeApply(evs)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrAdmit, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: no DC %q", ErrAdmit, name)
}

// DCLifecycle returns DC name's lifecycle status (false without a
// lifecycle or for an unknown DC).
func (m *Middlebox) DCLifecycle(name string) (failover.LifeStatus, bool) {
	if m.life == nil {
		return failover.LifeStatus{}, false
	}
	m.flows.Lock()
	defer m.flows.Unlock()
	for d := range m.dcs {
		if m.dcs[d].Name == name {
			return m.life.m.Status(failover.DCID(d))
		}
	}
	return failover.LifeStatus{}, false
}
