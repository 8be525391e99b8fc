package failover

import (
	"math/rand/v2"
	"testing"
	"time"
)

// lifeModel is what the property test knows from the inputs it gave and
// the events it got, to check the Lifecycle's invariants:
//
//  1. a DC becomes live by a pass (caught_up) only if that pass started
//     when no flow lacked it, none had for Margin, and nothing was missed
//     from Margin before its start until it completed;
//  2. the cursor never moves past what PROGRESS reported (it rises only
//     on a report, never above the report's cursor);
//  3. a DC that missed bytes (catchup and manual modes) is never live
//     again without a completed pass or an admit;
//  4. states move only along allowed edges, and events match the state;
//  5. a DC that missed bytes for a divergence while live is never made
//     live by a pass (caught_up) unless a verify pass that started after
//     that divergence has completed; a verify pass's bound is its start G
//     minus Margin, and two verify passes of a DC start at least
//     VerifyEvery apart.
type lifeModel struct {
	mode     RejoinMode
	margin   time.Duration
	missed   []bool      // missed bytes since last live
	lacking  []int       // last SetLacking
	dirty    []time.Time // last time lacking>0 or a miss
	jobStart map[uint64]time.Time
	jobDC    map[uint64]DCID
	state    []DCState
	cursor   []Tag
	inSync   []bool
	// Verify passes (invariant 5).
	every     time.Duration
	divs      []uint64 // divergence misses per DC
	needV     []bool   // a divergence since last live, not yet followed by a completed verify pass started after it
	jobVerify map[uint64]bool
	jobDivs   map[uint64]uint64 // the DC's divs when the job started
	lastV     []time.Time       // last verify pass start per DC
	divLive   int               // caught_up after a divergence (coverage)
}

func FuzzLifecycle(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{1, 0, 0, 1, 2, 4, 4, 4, 9, 9, 9, 3, 3, 7})
	f.Add([]byte{2, 3, 3, 3, 1, 1, 5, 5, 5, 5})
	// divergence of dublin, passes done, ticks, another divergence
	f.Add([]byte{0, 4, 2, 1, 4, 4, 1, 9, 9, 1, 200, 4, 1, 1, 2, 1, 4, 9, 1, 250, 4, 1, 1, 9, 1, 255, 4, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		runLifeProperty(t, data)
	})
}

// TestLifecycleProperty runs the property over random programs (the fuzz
// corpus covers the rest).
func TestLifecycleProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var caught, admitted, resets, verifies, divLive int
	for range 800 {
		b := make([]byte, 40+r.IntN(400))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		st, dl := runLifeProperty(t, b)
		verifies += int(st.VerifyPasses)
		divLive += dl
		caught += int(st.Transitions[DCStateLive][LifeCaughtUp])
		admitted += int(st.Transitions[DCStateLive][LifeAdmitted])
		resets += int(st.Resets)
	}
	// The programs must reach the interesting transitions.
	if caught < 20 || admitted < 20 || resets < 5 || verifies < 20 || divLive < 5 {
		t.Fatalf("weak programs: %d caught up, %d admitted, %d resets, %d verify passes, %d caught up after a divergence",
			caught, admitted, resets, verifies, divLive)
	}
	t.Logf("%d caught up, %d admitted, %d resets, %d verify passes, %d caught up after a divergence", caught, admitted, resets, verifies, divLive)
}

// verifyEvery is the VerifyEvery of a program's second byte (bits 1-2):
// the default (a minute, far above a program's steps of at most 9.4 s),
// or short enough that the limit both holds and lapses.
var verifyEvery = [4]time.Duration{0, time.Nanosecond, 3 * time.Second, 20 * time.Second}

// runLifeProperty runs one program: a mode byte, a byte of DC count
// (bit 0) and VerifyEvery (bits 1-2), then (op, a, b) triples. It returns
// the Lifecycle's stats and how many DCs were caught up after a
// divergence.
func runLifeProperty(t *testing.T, data []byte) (LifeStats, int) {
	if len(data) < 2 {
		return LifeStats{}, 0
	}
	mode := RejoinMode(data[0] % 3)
	ndc := 2 + int(data[1]%2)
	every := verifyEvery[data[1]>>1%4]
	data = data[2:]
	topo := testTopoN(1, ndc)
	cfg := LifecycleConfig{Mode: mode, Margin: 2 * time.Second, ResetAfter: 3 * time.Second, VerifyEvery: every}
	now := lms(100000)
	l, err := NewLifecycle(cfg, topo, now)
	if err != nil {
		t.Fatal(err)
	}
	m := &lifeModel{mode: mode, margin: cfg.Margin, missed: make([]bool, ndc), lacking: make([]int, ndc), dirty: make([]time.Time, ndc),
		jobStart: map[uint64]time.Time{}, jobDC: map[uint64]DCID{}, state: make([]DCState, ndc), cursor: make([]Tag, ndc), inSync: make([]bool, ndc),
		every: l.Config().VerifyEvery, divs: make([]uint64, ndc), needV: make([]bool, ndc), jobVerify: map[uint64]bool{}, jobDivs: map[uint64]uint64{},
		lastV: make([]time.Time, ndc)}
	for i := range m.state {
		m.state[i], m.inSync[i] = DCStateLive, true
	}
	var reported []Tag = make([]Tag, ndc)
	for len(data) >= 3 {
		op, a, b := data[0], data[1], data[2]
		data = data[3:]
		now = now.Add(time.Duration(b) * 37 * time.Millisecond)
		dc := DCID(int(a) % ndc)
		g := uint64(now.UnixNano())
		var evs []LifeEvent
		var done *Progress
		switch op % 10 {
		case 0:
			evs = l.DCDown(now, dc, g-uint64(b)*uint64(time.Millisecond))
			if mode != RejoinTrust {
				m.missed[dc], m.dirty[dc] = true, now
			}
		case 1:
			evs = l.DCUp(now, dc)
		case 2:
			// Divergence (a reply mismatch) twice as often as the others.
			cause := LifeCause(1 + int(b)%8)
			if cause > LifeBranchDown {
				cause = LifeDivergence
			}
			wasLive := l.State(dc) == DCStateLive
			evs = l.Missed(now, dc, cause, ^uint64(0))
			if mode != RejoinTrust {
				m.missed[dc], m.dirty[dc] = true, now
				if cause == LifeDivergence && wasLive {
					m.divs[dc]++
					m.needV[dc] = true
				}
			}
		case 3:
			n := int(b % 3)
			if n > 0 || m.lacking[dc] > 0 {
				m.dirty[dc] = now
			}
			m.lacking[dc] = n
			evs = l.SetLacking(now, dc, n)
		case 4, 5, 6:
			j, ok := l.JobOf(dc)
			id, from := j.ID, j.From
			if !ok || b%11 == 0 {
				id = uint64(b) // often stale
			}
			st := JobState(1 + int(op)%3)
			if op%10 == 4 {
				st = JobDone
			}
			c := Tag{G: from.G + uint64(b)*uint64(50*time.Millisecond)}
			if b%13 == 0 {
				c = Tag{G: from.G / 2}
			}
			p := Progress{Job: id, State: st, Keys: uint64(b), Bytes: uint64(b) * 100, Remaining: uint64(a), Cursor: c}
			before, _ := l.Status(dc)
			evs = l.Progress(now, dc, p)
			after, _ := l.Status(dc)
			if !after.InSync && before.Cursor.Less(after.Cursor) && p.Cursor.Less(after.Cursor) {
				t.Fatalf("cursor moved to %v past the report %v", after.Cursor, p.Cursor)
			}
			if ok && id == p.Job && st == JobDone {
				done = &p
				if m.jobVerify[id] && m.jobDivs[id] == m.divs[dc] {
					m.needV[dc] = false
				}
			}
			if ok && id == p.Job && !p.Cursor.Less(reported[dc]) {
				reported[dc] = p.Cursor
			}
		case 7:
			j, _ := l.JobOf(dc)
			evs = l.JobLost(now, dc, j.ID)
		case 8:
			evs, _ = l.Admit(now, dc)
		case 9:
			evs = l.Tick(now)
		}
		for _, e := range evs {
			m.check(t, l, now, e, done)
		}
		// Cursor rises only on a PROGRESS report.
		for i := range ndc {
			s, _ := l.Status(DCID(i))
			if !s.InSync && !m.missed[i] && mode != RejoinTrust && l.State(DCID(i)) != DCStateLive {
				t.Fatalf("dc %d out of sync without a miss", i)
			}
			if op%10 < 4 || op%10 > 6 {
				if !s.InSync && !m.inSync[i] && m.cursor[i].Less(s.Cursor) {
					t.Fatalf("dc %d: cursor rose from %v to %v without a report (op %d)", i, m.cursor[i], s.Cursor, op%10)
				}
			}
			m.cursor[i], m.inSync[i] = s.Cursor, s.InSync
			if l.State(DCID(i)) != m.state[i] {
				t.Fatalf("dc %d: state %v, events said %v", i, l.State(DCID(i)), m.state[i])
			}
			if mode != RejoinTrust && s.NeedsVerify != m.needV[i] {
				t.Fatalf("dc %d: needs verify %v, the model says %v", i, s.NeedsVerify, m.needV[i])
			}
		}
	}
	// Export and import keep every out-of-sync DC out of service, and its
	// need of a verify pass.
	st := l.Export()
	l2, _ := NewLifecycle(cfg, topo, now)
	l2.Import(now, st)
	for i := range ndc {
		if mode != RejoinTrust && l.State(DCID(i)) != DCStateLive && l2.State(DCID(i)) == DCStateLive {
			t.Fatalf("dc %d: %v before the restart, live after", i, l.State(DCID(i)))
		}
		s1, _ := l.Status(DCID(i))
		s2, _ := l2.Status(DCID(i))
		if mode != RejoinTrust && s1.NeedsVerify != s2.NeedsVerify {
			t.Fatalf("dc %d: needs verify %v before the restart, %v after", i, s1.NeedsVerify, s2.NeedsVerify)
		}
	}
	return l.Stats(), m.divLive
}

func (m *lifeModel) check(t *testing.T, l *Lifecycle, now time.Time, e LifeEvent, done *Progress) {
	t.Helper()
	switch e.Kind {
	case EvTransition:
		if m.state[e.DC] != e.From {
			t.Fatalf("dc %d: transition from %v, was %v", e.DC, e.From, m.state[e.DC])
		}
		if !allowedEdge(e.From, e.To) {
			t.Fatalf("dc %d: edge %v->%v", e.DC, e.From, e.To)
		}
		if e.From == DCStateDown && e.To == DCStateLive && m.mode != RejoinTrust {
			t.Fatalf("dc %d: down->live in %v mode", e.DC, m.mode)
		}
		if e.To == DCStateLive && m.missed[e.DC] && m.mode != RejoinTrust {
			switch e.Cause {
			case LifeCaughtUp:
				if done == nil {
					t.Fatalf("dc %d: caught up without a completed pass", e.DC)
				}
				start := m.jobStart[done.Job]
				if m.lacking[e.DC] > 0 || m.dirty[e.DC].Add(m.margin).After(start) {
					t.Fatalf("dc %d: admitted by pass %d started at %v, but a flow lacked it or it missed bytes at %v (lacking %d)",
						e.DC, done.Job, start, m.dirty[e.DC], m.lacking[e.DC])
				}
				if m.needV[e.DC] {
					t.Fatalf("dc %d: admitted by pass %d (verify %v) after a divergence, with no verify pass started after it completed",
						e.DC, done.Job, m.jobVerify[done.Job])
				}
				if m.divs[e.DC] > 0 {
					m.divLive++
				}
			case LifeAdmitted:
			default:
				t.Fatalf("dc %d: live again by %v after missing bytes", e.DC, e.Cause)
			}
		}
		m.state[e.DC] = e.To
		if e.To == DCStateLive {
			m.missed[e.DC], m.needV[e.DC], m.divs[e.DC] = false, false, 0
		}
	case EvCatchup:
		if m.mode != RejoinCatchup || m.state[e.DC] != DCStateJoining {
			t.Fatalf("dc %d: catchup in %v mode, state %v", e.DC, m.mode, m.state[e.DC])
		}
		if e.Source == e.DC || m.state[e.Source] != DCStateLive {
			t.Fatalf("dc %d: catchup from %d (%v)", e.DC, e.Source, m.state[e.Source])
		}
		m.jobStart[e.Job] = now
		m.jobDC[e.Job] = e.DC
		m.jobVerify[e.Job], m.jobDivs[e.Job] = e.Verify, m.divs[e.DC]
		if e.Verify != (m.needV[e.DC] && (m.lastV[e.DC].IsZero() || !now.Before(m.lastV[e.DC].Add(m.every)))) {
			t.Fatalf("dc %d: pass %d verify %v; needs verify %v, last verify pass at %v", e.DC, e.Job, e.Verify, m.needV[e.DC], m.lastV[e.DC])
		}
		if want := uint64(now.UnixNano() - int64(m.margin)); e.Bound != want {
			t.Fatalf("dc %d: pass %d bound %d, want %d (start G minus margin)", e.DC, e.Job, e.Bound, want)
		}
		if e.Verify {
			m.lastV[e.DC] = now
		}
	case EvStop:
		if m.jobDC[e.Job] != e.DC {
			t.Fatalf("stop of job %d of dc %d, started for %d", e.Job, e.DC, m.jobDC[e.Job])
		}
	case EvResetLacking:
		if m.lacking[e.DC] == 0 {
			t.Fatalf("dc %d: reset with no flow lacking it", e.DC)
		}
	}
}
