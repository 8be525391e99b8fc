package middlebox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// Lifecycle tests: the memnet rig of the sequencer tests (sydney: two
// nodes, dublin: one; forked 6379, anycast 6380, echo servers), fake
// nodes on the order streams that answer CATCHUP with PROGRESS as the
// test says, and liveness set by hand (no detector).

const testMargin = 300 * time.Millisecond

func newLifeRig(t *testing.T, statePath string, mode failover.RejoinMode, resetAfter time.Duration) *seqRig {
	t.Helper()
	return newSeqRigCfg(t, "", func(c *Config) {
		c.Lifecycle = &LifecycleConfig{LifecycleConfig: failover.LifecycleConfig{Mode: mode, Margin: testMargin, ResetAfter: resetAfter}, StatePath: statePath}
	})
}

func (r *seqRig) life(t *testing.T, dc string) failover.LifeStatus {
	t.Helper()
	s, ok := r.mb.DCLifecycle(dc)
	if !ok {
		t.Fatalf("no lifecycle for %s", dc)
	}
	return s
}

func (r *seqRig) waitState(t *testing.T, dc string, want failover.DCState) failover.LifeStatus {
	t.Helper()
	var s failover.LifeStatus
	testenv.WaitFor(t, 10*time.Second, dc+" "+want.String(), func() bool {
		s = r.life(t, dc)
		return s.State == want
	})
	return s
}

// catchups returns the CATCHUP frames node ap received.
func (r *seqRig) catchups(ap netip.AddrPort) []orderwire.Frame {
	frames, _ := r.nodes[ap].snapshot()
	var out []orderwire.Frame
	for _, f := range frames {
		if f.Type == orderwire.Catchup {
			out = append(out, f)
		}
	}
	return out
}

// waitCatchup waits until node ap has received a CATCHUP with a job above
// after and returns it.
func (r *seqRig) waitCatchup(t *testing.T, ap netip.AddrPort, after uint64) orderwire.Frame {
	t.Helper()
	var got orderwire.Frame
	testenv.WaitFor(t, 10*time.Second, "CATCHUP at "+ap.String(), func() bool {
		for _, f := range r.catchups(ap) {
			if f.Job > after {
				got = f
				return true
			}
		}
		return false
	})
	return got
}

// progress sends a PROGRESS frame on node ap's order connection.
func (r *seqRig) progress(t *testing.T, ap netip.AddrPort, f orderwire.Frame) {
	t.Helper()
	if !r.tryProgress(t, ap, f) {
		t.Fatalf("node %v: no order connection to send PROGRESS on", ap)
	}
}

// tryProgress is progress; it reports false when the node has no order
// connection (cut, not yet back).
func (r *seqRig) tryProgress(t *testing.T, ap netip.AddrPort, f orderwire.Frame) bool {
	t.Helper()
	f.Type = orderwire.Progress
	b, err := orderwire.Append(nil, &f)
	if err != nil {
		t.Fatal(err)
	}
	n := r.nodes[ap]
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.conns) == 0 {
		return false
	}
	_, err = n.conns[len(n.conns)-1].Write(b)
	return err == nil
}

// anycastDC opens an anycast connection, exchanges a byte and returns the
// DC that served it.
func (r *seqRig) anycastDC(t *testing.T) string {
	t.Helper()
	c := r.dial(t, anyPort)
	defer c.Close()
	exchange(t, c, []byte("a"))
	for _, f := range r.mb.Flows(0) {
		if f.Kind == "anycast" && f.Client == c.LocalAddr().String() {
			return f.DC
		}
	}
	t.Fatalf("no anycast flow for %v", c.LocalAddr())
	return ""
}

// finishPasses answers every CATCHUP node ap gets with JobDone until DC
// dc is live.
func (r *seqRig) finishPasses(t *testing.T, dc string, nodes ...netip.AddrPort) {
	t.Helper()
	answered := map[netip.AddrPort]uint64{}
	testenv.WaitFor(t, 10*time.Second, dc+" live after its passes", func() bool {
		for _, ap := range nodes {
			for _, f := range r.catchups(ap) {
				if f.Job > answered[ap] && r.tryProgress(t, ap, orderwire.Frame{Job: f.Job, State: orderwire.JobDone, Keys: 3, Bytes: 300, G: f.G + 1}) {
					answered[ap] = f.Job
				}
			}
		}
		return r.life(t, dc).State == failover.DCStateLive
	})
}

// Cut sydney (both nodes) and heal it: down, then joining with a CATCHUP
// to a sydney node from dublin at a cursor margin behind the cut; anycast
// goes to dublin while sydney is joining although sydney is preferred;
// a completed clean pass makes it live, and anycast returns to it.
func TestLifecycleCutHealCatchup(t *testing.T) {
	r := newLifeRig(t, "", failover.RejoinCatchup, 0)
	if dc := r.anycastDC(t); dc != "sydney" {
		t.Fatalf("anycast to %s, want the preferred sydney", dc)
	}
	cutAt := time.Now()
	r.mb.SetNodeLive(syd1, false)
	r.mb.SetNodeLive(syd2, false)
	if s := r.life(t, "sydney"); s.State != failover.DCStateDown || s.Cause != failover.LifeCut || s.InSync {
		t.Fatalf("cut sydney: %+v", s)
	}
	r.mb.SetNodeLive(syd1, true)
	r.mb.SetNodeLive(syd2, true)
	if s := r.life(t, "sydney"); s.State != failover.DCStateJoining || s.Cause != failover.LifeHealed {
		t.Fatalf("healed sydney: %+v", s)
	}
	cu := r.waitCatchup(t, syd1, 0)
	if cu.SourceName() != "dublin" || cu.G > uint64(cutAt.UnixNano()) || cu.G < uint64(cutAt.Add(-testMargin-time.Second).UnixNano()) {
		t.Fatalf("CATCHUP %+v (source %q), want source dublin and a cursor about %v before the cut", cu, cu.SourceName(), testMargin)
	}
	if cu.Flags != 0 || cu.Bound != 0 {
		t.Fatalf("CATCHUP after a cut has flags %#x, bound %d: want a plain pass", cu.Flags, cu.Bound)
	}
	if d := r.dcInfo(t, "sydney"); d.NeedsVerify || d.Catchup == nil || d.Catchup.Verify {
		t.Fatalf("/dcs sydney after a cut: needs_verify %v, catchup %+v; want a plain pass", d.NeedsVerify, d.Catchup)
	}
	for range 3 {
		if dc := r.anycastDC(t); dc != "dublin" {
			t.Fatalf("anycast to %s while sydney is joining", dc)
		}
	}
	r.progress(t, syd1, orderwire.Frame{Job: cu.Job, State: orderwire.JobRunning, Keys: 5, Bytes: 500, Remaining: 10, G: cu.G + 1})
	testenv.WaitFor(t, 5*time.Second, "progress on /dcs", func() bool {
		for _, d := range r.mb.DCs() {
			if d.Name == "sydney" && d.Catchup != nil && d.Catchup.Keys == 5 && d.Catchup.Node == syd1.String() {
				return true
			}
		}
		return false
	})
	r.finishPasses(t, "sydney", syd1, syd2)
	if s := r.life(t, "sydney"); s.Cause != failover.LifeCaughtUp || !s.InSync {
		t.Fatalf("sydney after catch-up: %+v", s)
	}
	if dc := r.anycastDC(t); dc != "sydney" {
		t.Fatalf("anycast to %s after sydney rejoined", dc)
	}
	rec := httptest.NewRecorder()
	r.mb.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`sdnkvs_dc_state{dc="sydney",state="live"} 1`, `sdnkvs_dc_transitions_total{cause="caught_up",state="live"} 1`,
		`sdnkvs_dc_transitions_total{cause="cut",state="down"} 1`, `sdnkvs_dc_catchup_passes_total{dc="sydney"}`,
		`sdnkvs_dc_catchup_verify_passes_total{dc="sydney"} 0`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// dcInfo returns DC name's entry of /dcs (through the handler, as JSON).
func (r *seqRig) dcInfo(t *testing.T, name string) DCInfo {
	t.Helper()
	rec := httptest.NewRecorder()
	r.mb.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/dcs", nil))
	var dcs []DCInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &dcs); err != nil {
		t.Fatalf("/dcs: %v\n%s", err, rec.Body)
	}
	for _, d := range dcs {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("/dcs has no %s:\n%s", name, rec.Body)
	return DCInfo{}
}

// A forked flow whose DCs answer a read differently (dublin holds a
// corrupt record): dublin is dropped from the flow for a reply mismatch
// and joins (cause divergence, needs_verify); its CATCHUP is a verify
// pass (orderwire.CatchupVerify) with a Bound a margin behind the clock's
// G when the pass started. Once the verify pass is done, later passes are
// plain and admit dublin when the flow that lacks it is gone.
func TestLifecycleReplyMismatchVerifyPass(t *testing.T) {
	r := newSeqRigServe(t, "", func(c *Config) {
		c.Lifecycle = &LifecycleConfig{LifecycleConfig: failover.LifecycleConfig{Mode: failover.RejoinCatchup, Margin: testMargin, ResetAfter: -1}}
	}, corruptDublin)
	c := r.dial(t, 6379)
	rd := bufio.NewReader(c)
	ask := func(req, want string) {
		t.Helper()
		if _, err := io.WriteString(c, req+"\n"); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(rd, got); err != nil || string(got) != want {
			t.Fatalf("%s: %q, %v; want %q", req, got, err, want)
		}
	}
	ask("SET", "+OK\r\n")
	before := time.Now()
	ask("GET", "$1\r\nv\r\n") // sydney's answer: it is first in the flow
	s := r.waitState(t, "dublin", failover.DCStateJoining)
	if s.Cause != failover.LifeDivergence || !s.NeedsVerify {
		t.Fatalf("dublin after a reply mismatch: %+v", s)
	}
	cu := r.waitCatchup(t, dub1, 0)
	after := time.Now()
	lo, hi := uint64(before.Add(-testMargin).UnixNano()), uint64(after.Add(-testMargin).UnixNano())
	if cu.Flags != orderwire.CatchupVerify || cu.Bound < lo || cu.Bound > hi || cu.SourceName() != "sydney" {
		t.Fatalf("CATCHUP %+v (source %q): want flags %#x, source sydney and a bound in [%d, %d] (the clock's G minus %v)",
			cu, cu.SourceName(), orderwire.CatchupVerify, lo, hi, testMargin)
	}
	if cu.G > cu.Bound {
		t.Fatalf("CATCHUP cursor %d above its bound %d", cu.G, cu.Bound)
	}
	d := r.dcInfo(t, "dublin")
	if !d.NeedsVerify || d.Catchup == nil || !d.Catchup.Verify || d.Catchup.Bound != cu.Bound || d.Catchup.Job != cu.Job {
		t.Fatalf("/dcs dublin: needs_verify %v, catchup %+v; want needs_verify and the verify pass %d, bound %d", d.NeedsVerify, d.Catchup, cu.Job, cu.Bound)
	}
	rec := httptest.NewRecorder()
	r.mb.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := `sdnkvs_dc_catchup_verify_passes_total{dc="dublin"} 1`; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("/metrics lacks %q", want)
	}
	// The verify pass completes: dublin no longer needs one; the flow
	// that lacks it keeps it joining, with plain passes.
	r.progress(t, dub1, orderwire.Frame{Job: cu.Job, State: orderwire.JobDone, G: cu.G + 1})
	testenv.WaitFor(t, 10*time.Second, "needs_verify cleared", func() bool { return !r.dcInfo(t, "dublin").NeedsVerify })
	cu2 := r.waitCatchup(t, dub1, cu.Job)
	if cu2.Flags != 0 || cu2.Bound != 0 {
		t.Fatalf("pass after the verify pass: %+v, want a plain one", cu2)
	}
	if s := r.life(t, "dublin"); s.State != failover.DCStateJoining || s.FlowsLacking != 1 {
		t.Fatalf("dublin while the flow lacks it: %+v", s)
	}
	c.Close()
	testenv.WaitFor(t, 10*time.Second, "the flow gone", func() bool { return r.life(t, "dublin").FlowsLacking == 0 })
	r.finishPasses(t, "dublin", dub1)
	if s := r.life(t, "dublin"); s.VerifyPasses != 1 || s.NeedsVerify {
		t.Fatalf("dublin live again: %+v, want 1 verify pass", s)
	}
}

// flowOn returns the one forked flow's slot (under nothing: takes flows).
func (r *seqRig) forkedFlow(t *testing.T) int32 {
	t.Helper()
	r.mb.flows.Lock()
	defer r.mb.flows.Unlock()
	for i := range r.mb.flows.tab.slab {
		if f := &r.mb.flows.tab.slab[i]; f.used && f.kind == kindForked {
			return int32(i)
		}
	}
	t.Fatal("no forked flow")
	return -1
}

// dropBranch removes the branch of forked flow i on DC dc with cause, as
// the fork's timers would (lag) and through the same path (drainFork).
func (r *seqRig) dropBranch(t *testing.T, i int32, dc int, cause ackmerge.Cause) {
	t.Helper()
	m := r.mb
	m.timers.Lock()
	defer m.timers.Unlock()
	m.flows.Lock()
	f := &m.flows.tab.slab[i]
	for j := range int(f.nbranch) {
		if m.nodes[f.nodes[j]].dc == dc {
			f.fork.RemoveBranch(j, cause, time.Now(), &m.timers.out)
			m.timers.outs = m.drainFork(i, &m.timers.out, m.timers.outs)
		}
	}
	m.flows.Unlock()
	m.flushTimerOutput()
}

// A branch dropped for lag while its DC stays up: the DC is joining
// (cause lagged), the flow lacks it, so passes do not admit it; once the
// flow closes, a clean pass does.
func TestLifecycleLaggedBranchForcesCatchup(t *testing.T) {
	r := newLifeRig(t, "", failover.RejoinCatchup, -1)
	c := r.dial(t, 6379)
	exchange(t, c, []byte("before"))
	r.dropBranch(t, r.forkedFlow(t), 1, ackmerge.CauseLagged)
	s := r.life(t, "dublin")
	if s.State != failover.DCStateJoining || s.Cause != failover.LifeLagged || s.FlowsLacking != 1 {
		t.Fatalf("dublin after its branch lagged: %+v", s)
	}
	exchange(t, c, []byte("after: sydney only"))
	cu := r.waitCatchup(t, dub1, 0)
	if cu.SourceName() != "sydney" {
		t.Fatalf("CATCHUP from %q", cu.SourceName())
	}
	r.progress(t, dub1, orderwire.Frame{Job: cu.Job, State: orderwire.JobDone, G: cu.G + 1})
	// Passes repeat while the flow lacks dublin; none admits it.
	cu2 := r.waitCatchup(t, dub1, cu.Job)
	r.progress(t, dub1, orderwire.Frame{Job: cu2.Job, State: orderwire.JobDone, G: cu2.G + 1})
	r.waitCatchup(t, dub1, cu2.Job)
	if s := r.life(t, "dublin"); s.State != failover.DCStateJoining {
		t.Fatalf("dublin %v while a flow lacks it", s.State)
	}
	c.Close()
	testenv.WaitFor(t, 10*time.Second, "the flow gone", func() bool { return r.life(t, "dublin").FlowsLacking == 0 })
	r.finishPasses(t, "dublin", dub1)
}

// A flow opened while dublin was down lacks it: after the first pass and
// --rejoin-reset-after, the flow is reset (its client sees the reset),
// and then dublin is admitted.
func TestLifecycleResetsFlowsLackingAfterResetAfter(t *testing.T) {
	r := newLifeRig(t, "", failover.RejoinCatchup, 200*time.Millisecond)
	r.mb.SetNodeLive(dub1, false)
	c := r.dial(t, 6379)
	exchange(t, c, []byte("during the outage"))
	r.mb.SetNodeLive(dub1, true)
	if s := r.life(t, "dublin"); s.State != failover.DCStateJoining || s.FlowsLacking != 1 {
		t.Fatalf("healed dublin: %+v", s)
	}
	cu := r.waitCatchup(t, dub1, 0)
	r.progress(t, dub1, orderwire.Frame{Job: cu.Job, State: orderwire.JobDone, G: cu.G + 1})
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("the lacking flow was not reset: %v", err)
	}
	if got := r.mb.life.resets.Load(); got != 1 {
		t.Fatalf("%d flows reset, want 1", got)
	}
	r.finishPasses(t, "dublin", dub1)
}

// The order connection of the node running the job drops: the job goes
// to the other node of the DC as a new pass from the last cursor.
func TestLifecycleJobReassignedWhenItsNodeGoes(t *testing.T) {
	r := newLifeRig(t, "", failover.RejoinCatchup, 0)
	r.mb.SetNodeLive(syd1, false)
	r.mb.SetNodeLive(syd2, false)
	cut := time.Now()
	// The pass's cursor may rise to margin before its start: let the
	// clock pass the cut so that there is room above the cut's cursor.
	testenv.WaitFor(t, time.Second, "1 ms after the cut", func() bool { return time.Since(cut) > time.Millisecond })
	r.mb.SetNodeLive(syd1, true)
	r.mb.SetNodeLive(syd2, true)
	cu := r.waitCatchup(t, syd1, 0)
	at := cu.G + 1000
	r.progress(t, syd1, orderwire.Frame{Job: cu.Job, State: orderwire.JobRunning, G: at})
	testenv.WaitFor(t, 5*time.Second, "cursor moved", func() bool { return r.life(t, "sydney").Cursor.G == at })
	r.nodes[syd1].cut()
	cu2 := r.waitCatchup(t, syd2, 0)
	if cu2.Job <= cu.Job || cu2.G != at || cu2.SourceName() != "dublin" {
		t.Fatalf("reassigned CATCHUP %+v (source %q), want a new job from cursor %d", cu2, cu2.SourceName(), at)
	}
	r.finishPasses(t, "sydney", syd1, syd2)
}

// A restart restores joining (cause restored) from the state file, so a
// DC that missed bytes is not trusted; with no DC live, new connections
// are refused (RST, counted) until an operator admits one.
func TestLifecycleRestartRestoresJoiningAndRefuses(t *testing.T) {
	state := filepath.Join(t.TempDir(), "lifecycle.json")
	r := newLifeRig(t, state, failover.RejoinCatchup, 0)
	r.mb.SetNodeLive(dub1, false)
	r.mb.SetNodeLive(syd1, false)
	r.mb.SetNodeLive(syd2, false) // both down: nothing live (no detector to hold the last one)
	r.mb.Close()
	b, err := os.ReadFile(state)
	if err != nil || !strings.Contains(string(b), `"down"`) {
		t.Fatalf("state file: %v\n%s", err, b)
	}
	r2 := newLifeRig(t, state, failover.RejoinCatchup, 0)
	for _, dc := range []string{"sydney", "dublin"} {
		if s := r2.life(t, dc); s.State != failover.DCStateJoining || s.Cause != failover.LifeRestored {
			t.Fatalf("%s after the restart: %+v", dc, s)
		}
	}
	ctx, cancel := testCtx(5 * time.Second)
	defer cancel()
	if c, err := r2.client.DialTCP(ctx, netip.AddrPortFrom(testVIP, 6379)); err == nil {
		c.Close()
		t.Fatal("a connection was accepted with no DC live")
	}
	if r2.mb.Drop(ReasonNoCurrentDC) == 0 {
		t.Fatal("refused connection not counted")
	}
	rec := httptest.NewRecorder()
	r2.mb.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/dcs/dublin/admit", nil))
	if rec.Code != 200 || r2.life(t, "dublin").State != failover.DCStateLive {
		t.Fatalf("admit: %d %s", rec.Code, rec.Body)
	}
	c := r2.dial(t, 6379)
	exchange(t, c, []byte("served again"))
	// sydney catches up from dublin now.
	if cu := r2.waitCatchup(t, syd1, 0); cu.SourceName() != "dublin" {
		t.Fatalf("CATCHUP from %q", cu.SourceName())
	}
	// Admit is refused while a DC is live in catchup mode.
	rec = httptest.NewRecorder()
	r2.mb.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/dcs/sydney/admit", nil))
	if rec.Code == 200 {
		t.Fatalf("admit of sydney in catchup mode with dublin live: %d", rec.Code)
	}
}

// A DC that stops being current (here a branch reset while it stays up)
// must not serve reads: its anycast connections are reset, and new ones
// go to a live DC.
func TestLifecycleAnycastFlowsOfAStaleDCAreReset(t *testing.T) {
	r := newLifeRig(t, "", failover.RejoinCatchup, 0)
	a := r.dial(t, anyPort)
	exchange(t, a, []byte("read"))
	c := r.dial(t, 6379)
	exchange(t, c, []byte("write"))
	r.dropBranch(t, r.forkedFlow(t), 0, ackmerge.CauseRST) // sydney's branch
	if s := r.life(t, "sydney"); s.State != failover.DCStateJoining || s.Cause != failover.LifeRST {
		t.Fatalf("sydney after its branch was reset: %+v", s)
	}
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := a.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("anycast connection on the stale DC not reset: %v", err)
	}
	if dc := r.anycastDC(t); dc != "dublin" {
		t.Fatalf("new anycast connection went to %s", dc)
	}
	exchange(t, c, []byte("the forked flow goes on with dublin"))
}

// A forked flow lists live DCs before joining ones, so that a tie of
// reply verification drops the joining DC, not the current one.
func TestLifecycleForkedFlowListsLiveDCsFirst(t *testing.T) {
	r := newLifeRig(t, "", failover.RejoinCatchup, 0)
	r.mb.SetNodeLive(syd1, false)
	r.mb.SetNodeLive(syd2, false)
	r.mb.SetNodeLive(syd1, true)
	r.mb.SetNodeLive(syd2, true)
	r.waitState(t, "sydney", failover.DCStateJoining)
	c := r.dial(t, 6379)
	exchange(t, c, []byte("x"))
	fl := r.mb.Flows(0)
	if len(fl) != 1 || len(fl[0].Nodes) != 2 || fl[0].Nodes[0] != dub1.String() {
		t.Fatalf("flows %+v: want dublin (live) first, then joining sydney", fl)
	}
}

func TestLifecycleManualAdmit(t *testing.T) {
	r := newLifeRig(t, "", failover.RejoinManual, 0)
	r.mb.SetNodeLive(dub1, false)
	r.mb.SetNodeLive(dub1, true)
	r.waitState(t, "dublin", failover.DCStateJoining)
	if len(r.catchups(dub1)) != 0 {
		t.Fatal("CATCHUP sent in manual mode")
	}
	if err := r.mb.AdmitDC("dublin"); err != nil {
		t.Fatal(err)
	}
	if s := r.life(t, "dublin"); s.State != failover.DCStateLive || s.Cause != failover.LifeAdmitted {
		t.Fatalf("dublin after admit: %+v", s)
	}
	if err := r.mb.AdmitDC("nowhere"); err == nil {
		t.Fatal("admitted an unknown DC")
	}
}

func TestLifecycleConfigNeedsSequencerForCatchup(t *testing.T) {
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	cfg.Lifecycle = &LifecycleConfig{}
	err := cfg.Validate()
	var ce *ConfigError
	if err == nil || !asConfigError(err, &ce) || ce.Field != "Lifecycle.Mode" {
		t.Fatalf("catchup without the sequencer: %v", err)
	}
	cfg.Lifecycle.Mode = failover.RejoinManual
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func testCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func asConfigError(err error, ce **ConfigError) bool { return errors.As(err, ce) }

// A damaged state file stops the start with an error naming it.
func TestLifecycleDamagedStateRefusesToStart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "lifecycle.json")
	if err := os.WriteFile(state, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Lifecycle = &LifecycleConfig{LifecycleConfig: failover.LifecycleConfig{Mode: failover.RejoinManual}, StatePath: state}
	m, err := New(newFakeDev(false, false), cfg)
	if err == nil {
		m.Close()
		t.Fatal("started with a damaged lifecycle state")
	}
	if !strings.Contains(err.Error(), state) {
		t.Fatalf("error %q does not name the file", err)
	}
}
