package failover

import (
	"encoding/json"
	"fmt"
	"time"
)

// LifecycleState is the Lifecycle's exportable state: what a restarted
// middlebox (or, later, a standby) needs so as not to trust a DC that is
// out of sync. Running jobs are not part of it: passes start afresh from
// the cursor.
type LifecycleState struct {
	Version int            `json:"version"`
	NextJob uint64         `json:"next_job"`
	DCs     []LifeDCRecord `json:"dcs"`
}

// LifeDCRecord is one DC's exported state.
type LifeDCRecord struct {
	Name   string    `json:"name"`
	State  DCState   `json:"state"`
	Since  time.Time `json:"since"`
	Cause  LifeCause `json:"cause"`
	InSync bool      `json:"in_sync"`
	Cursor Tag       `json:"cursor"`
	// NeedsVerify: it missed bytes for a divergence and has not completed
	// a verify pass since (absent in files written before it: false).
	NeedsVerify bool `json:"needs_verify,omitempty"`
}

const lifecycleStateVersion = 1

// Export returns the state.
func (l *Lifecycle) Export() LifecycleState {
	st := LifecycleState{Version: lifecycleStateVersion, NextJob: l.nextJob}
	for i := range l.dcs {
		d := &l.dcs[i]
		st.DCs = append(st.DCs, LifeDCRecord{Name: d.name, State: d.state, Since: d.since, Cause: d.cause, InSync: d.synced, Cursor: d.cursor,
			NeedsVerify: d.needVerify})
	}
	return st
}

// MarshalState returns Export as JSON.
func (l *Lifecycle) MarshalState() ([]byte, error) { return json.MarshalIndent(l.Export(), "", "  ") }

// ParseLifecycleState parses MarshalState's JSON.
func ParseLifecycleState(b []byte) (LifecycleState, error) {
	var st LifecycleState
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	if st.Version != lifecycleStateVersion {
		return st, fmt.Errorf("lifecycle state version %d, want %d", st.Version, lifecycleStateVersion)
	}
	return st, nil
}

// Import restores st into a Lifecycle fresh from NewLifecycle, at now,
// matching DCs by name (a DC not in st keeps its fresh state: live; a DC
// of st not in the topology is ignored). Every DC counts as reachable
// (report DCStateDown for those that are not): a DC that was out of sync
// (down or joining) becomes joining, cause LifeRestored, with its cursor
// and its need of a verify pass, so a restart never trusts it. The
// VerifyEvery limit is not restored: its first verify pass may start at
// once. In RejoinTrust mode nothing is restored but job numbers.
func (l *Lifecycle) Import(now time.Time, st LifecycleState) []LifeEvent {
	l.advance(now)
	l.nextJob = max(l.nextJob, st.NextJob)
	if l.cfg.Mode == RejoinTrust {
		return l.out
	}
	for _, r := range st.DCs {
		for i := range l.dcs {
			d := &l.dcs[i]
			if d.name != r.Name {
				continue
			}
			if r.InSync && r.State == DCStateLive {
				break
			}
			d.synced, d.cursor, d.dirty, d.needVerify = false, r.Cursor, l.now, r.NeedsVerify
			d.state, d.since, d.cause = DCStateJoining, l.now, LifeRestored
			l.stats.Transitions[DCStateJoining][LifeRestored]++
			l.out = append(l.out, LifeEvent{Kind: EvTransition, DC: DCID(i), From: DCStateLive, To: DCStateJoining, Cause: LifeRestored})
		}
	}
	for i := range l.dcs {
		if l.dcs[i].state == DCStateJoining {
			l.restartJob(DCID(i))
		}
	}
	return l.out
}

// ImportLost is Import for a state that is lost or damaged (the
// operator's recovery, --rejoin-state-lost): no DC can be shown current,
// so every DC becomes joining (cause LifeRestored) with its cursor at the
// start of the order (a catch-up copies everything). Until a DC is
// admitted (Admit, allowed while no DC is live) there is no source to
// copy from and new connections are refused; the DCs admitted after that
// one catch up from it. Whether a DC needed a verify pass is lost too, so
// every DC needs one (the admitted DC's need is cleared by the admit). In
// RejoinTrust mode nothing is restored.
func (l *Lifecycle) ImportLost(now time.Time) []LifeEvent {
	l.advance(now)
	if l.cfg.Mode == RejoinTrust {
		return l.out
	}
	for i := range l.dcs {
		d := &l.dcs[i]
		from := d.state
		d.synced, d.cursor, d.dirty, d.needVerify = false, Tag{}, l.now, true
		d.state, d.since, d.cause = DCStateJoining, l.now, LifeRestored
		l.stats.Transitions[DCStateJoining][LifeRestored]++
		l.out = append(l.out, LifeEvent{Kind: EvTransition, DC: DCID(i), From: from, To: DCStateJoining, Cause: LifeRestored})
	}
	return l.out
}
