//go:build linux

package scenario

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// DC lifecycle states as the middlebox's /dcs reports them
// (docs/design-lifecycle.md).
const (
	StateLive    = "live"
	StateDown    = "down"
	StateJoining = "joining"
)

// LifeInfo is a DC's lifecycle as /dcs reports it (middlebox.DCLifeInfo):
// State is "live", "down" or "joining" ("" from a middlebox without
// lifecycle).
type LifeInfo struct {
	State        string           `json:"state"`
	Since        string           `json:"since"`
	Cause        string           `json:"cause"`
	InSync       bool             `json:"in_sync"`
	FlowsLacking int              `json:"flows_lacking"`
	Catchup      *CatchupProgress `json:"catchup,omitempty"`
}

// CatchupProgress is a joining DC's catch-up pass as /dcs reports it
// (middlebox.CatchupInfo): the running one, or when none runs the last
// completed one (State "done").
type CatchupProgress struct {
	Job        uint64  `json:"job"`
	Source     string  `json:"source"`
	Node       string  `json:"node"`
	State      string  `json:"state"` // running, waiting, done
	Clean      bool    `json:"clean"`
	Keys       uint64  `json:"keys"`
	Bytes      uint64  `json:"bytes"`
	Remaining  uint64  `json:"remaining"` // records left (estimate); ^0 unknown
	Rate       float64 `json:"rate"`      // bytes per second
	KeysPerSec float64 `json:"keys_per_sec"`
	ETA        float64 `json:"eta_s"` // -1 unknown
	Passes     uint64  `json:"passes"`
}

// Life returns d's lifecycle.
func (d DCState) Life() LifeInfo { return d.LifeInfo }

// Lifecycle is d's lifecycle state: State, or for a middlebox that does
// not report one, "live" or "down" from Live.
func (d DCState) Lifecycle() string {
	if s := d.Life().State; s != "" {
		return s
	}
	if d.Live {
		return StateLive
	}
	return StateDown
}

// DCStateOf returns DC dc's entry of /dcs.
func (e *Env) DCStateOf(dc string) (DCState, error) {
	dcs, err := e.DCs()
	if err != nil {
		return DCState{}, err
	}
	for _, d := range dcs {
		if d.Name == dc {
			return d, nil
		}
	}
	return DCState{}, fmt.Errorf("scenario: /dcs has no DC %q", dc)
}

// WaitDCState polls /dcs until DC dc's lifecycle state is state, or ctx
// ends, and returns the DC's entry.
func (e *Env) WaitDCState(ctx context.Context, dc, state string) (DCState, error) {
	var last DCState
	var lastErr error
	for {
		d, err := e.DCStateOf(dc)
		if err == nil && d.Lifecycle() == state {
			return d, nil
		}
		if err == nil {
			last = d
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("scenario: waiting for DC %s to be %s: %w (now %q, cause %q; last error %v)",
				dc, state, ctx.Err(), last.Lifecycle(), last.Life().Cause, lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StateChange is one change of a DC's lifecycle state seen by a
// Timeline.
type StateChange struct {
	At    time.Duration `json:"at_ns"` // since the Timeline's origin
	DC    string        `json:"dc"`
	From  string        `json:"from"`
	To    string        `json:"to"`
	Cause string        `json:"cause"`
}

// ProgressSample is one observation of a joining DC's catch-up.
type ProgressSample struct {
	At      time.Duration // since the Timeline's origin
	DC      string
	DCState string // the DC's state then
	Done    bool   // the DC's last finished pass (no pass running)
	CatchupProgress
}

// Timeline polls /dcs and records every lifecycle state change and the
// catch-up progress of joining DCs. Start it with StartTimeline, end it
// with Stop; its methods are safe for concurrent use.
type Timeline struct {
	origin time.Time
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	last     map[string]string
	changes  []StateChange
	progress []ProgressSample
	errors   int
}

// StartTimeline polls /dcs every interval; times are relative to origin.
func (e *Env) StartTimeline(ctx context.Context, origin time.Time, interval time.Duration) *Timeline {
	ctx, cancel := context.WithCancel(ctx)
	t := &Timeline{origin: origin, cancel: cancel, done: make(chan struct{}), last: map[string]string{}}
	go func() {
		defer close(t.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			t.poll(e)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return t
}

func (t *Timeline) poll(e *Env) {
	dcs, err := e.DCs()
	now := time.Since(t.origin)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.errors++
		return
	}
	for _, d := range dcs {
		st, life := d.Lifecycle(), d.Life()
		if prev, ok := t.last[d.Name]; !ok || prev != st {
			t.changes = append(t.changes, StateChange{At: now, DC: d.Name, From: prev, To: st, Cause: life.Cause})
			t.last[d.Name] = st
		}
		if p := life.Catchup; p != nil {
			t.progress = append(t.progress, ProgressSample{At: now, DC: d.Name, DCState: st, Done: p.State == "done", CatchupProgress: *p})
		}
	}
}

// Stop ends the polling (after one last poll of e) and waits for it.
func (t *Timeline) Stop(e *Env) {
	t.cancel()
	<-t.done
	t.poll(e)
}

// Changes returns the state changes seen so far, oldest first.
func (t *Timeline) Changes() []StateChange {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]StateChange(nil), t.changes...)
}

// Progress returns the catch-up samples seen so far, oldest first.
func (t *Timeline) Progress() []ProgressSample {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]ProgressSample(nil), t.progress...)
}

// State returns DC dc's last seen state ("" if never seen).
func (t *Timeline) State(dc string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last[dc]
}

// FirstAfter returns the time of the first change of dc to state at or
// after from, and whether there was one.
func (t *Timeline) FirstAfter(dc, state string, from time.Duration) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.changes {
		if c.DC == dc && c.To == state && c.At >= from {
			return c.At, true
		}
	}
	return 0, false
}

// String formats a change as "+12.34s sydney live -> down (cause)".
func (c StateChange) String() string {
	from := c.From
	if from == "" {
		from = "(start)"
	}
	s := fmt.Sprintf("%+.2fs %s %s -> %s", c.At.Seconds(), c.DC, from, c.To)
	if c.Cause != "" {
		s += " (" + c.Cause + ")"
	}
	return s
}

// CatchupTotals sums DC dc's catch-up passes seen in samples between from
// and to (the most keys and bytes each pass reported; passes already seen
// before from are left out), and returns the
// times of the first sample of a running pass and of the last sample
// whose keys grew (0 when none).
func CatchupTotals(samples []ProgressSample, dc string, from, to time.Duration) (keys, bytes uint64, first, last time.Duration) {
	type kb struct{ k, b uint64 }
	per := map[uint64]kb{}
	old := map[uint64]bool{} // passes seen before from
	var prev uint64
	var prevJob uint64
	for _, s := range samples {
		if s.DC == dc && s.At < from {
			old[s.Job] = true
		}
		if s.DC != dc || s.At < from || s.At > to || old[s.Job] {
			continue
		}
		if s.CatchupProgress.State == "running" && first == 0 {
			first = s.At
		}
		m := per[s.Job]
		per[s.Job] = kb{max(m.k, s.Keys), max(m.b, s.Bytes)}
		if s.Job != prevJob || s.Keys > prev {
			if s.Keys > 0 {
				last = s.At
			}
		}
		prev, prevJob = s.Keys, s.Job
	}
	for _, m := range per {
		keys += m.k
		bytes += m.b
	}
	return keys, bytes, first, last
}

// FirstPassDone returns the time of the first sample of DC dc between from
// and to that shows a completed catch-up pass not seen before from, and
// whether there was one.
func FirstPassDone(samples []ProgressSample, dc string, from, to time.Duration) (time.Duration, bool) {
	old := map[uint64]bool{}
	for _, s := range samples {
		if s.DC != dc {
			continue
		}
		if s.At < from {
			old[s.Job] = true
			continue
		}
		if s.At <= to && s.Done && !old[s.Job] {
			return s.At, true
		}
	}
	return 0, false
}
