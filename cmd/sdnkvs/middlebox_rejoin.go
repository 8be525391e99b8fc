package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/middlebox"
)

// RejoinFlags are the middlebox's DC lifecycle flags (embedded in
// MiddleboxCmd; docs/design-lifecycle.md): how a DC that missed
// acknowledged bytes becomes live (current) again.
type RejoinFlags struct {
	Rejoin           string        `name:"rejoin" enum:",catchup,manual,trust" default:"" help:"How a DC that missed acknowledged writes (cut, or dropped from a forked flow that went on) serves again: catchup (default with --sequenced: a node of the DC copies what it missed from a live DC, then it is live), manual (default without --sequenced: it stays joining until POST /dcs/NAME/admit on the control port), trust (readmit on reachability, the old behaviour: for backends that are not a store, e.g. echo or iperf). While joining, forked flows include it and anycast does not."`
	RejoinMargin     time.Duration `name:"rejoin-margin" default:"10s" help:"Catch-up cursors start this far behind the clock, and a pass admits a DC only if no forked flow lacked it for this long before the pass started (a write is stored within it of its stamp, or never)."`
	RejoinStateLost  bool          `name:"rejoin-state-lost" help:"Start with every DC joining (out of sync), whatever lifecycle.json holds: the recovery when it is damaged, or missing while --sequencer-state exists. Admit the DC to trust with POST /dcs/NAME/admit; the others then catch up from it."`
	RejoinResetAfter time.Duration `name:"rejoin-reset-after" default:"10s" help:"Forked flows that still lack a joining DC this long after its first completed catch-up pass are reset, so their clients reconnect including it (0: never; the DC then stays joining until they close)."`
	RejoinVerify     time.Duration `name:"rejoin-verify-every" default:"1m" help:"The least time between the starts of two verify passes of one DC. A DC dropped from a forked flow for a divergence (a reply mismatch) rejoins only after a verify pass (its node compares the whole store with a live DC's and repairs what differs), which reads both whole stores: this bounds that cost. Until the next one may start, plain passes keep the DC following the writes but do not admit it (0: no limit)."`
}

// config returns the lifecycle configuration; statePath is where the
// sequencer keeps its state ("" without --sequenced: the lifecycle state
// is then not persisted). Errors name the flag at fault.
func (r *RejoinFlags) config(sequenced bool, seqState string) (*middlebox.LifecycleConfig, error) {
	mode := failover.RejoinManual
	if sequenced {
		mode = failover.RejoinCatchup
	}
	if r.Rejoin != "" {
		m, err := failover.ParseRejoinMode(r.Rejoin)
		if err != nil {
			return nil, fmt.Errorf("--rejoin: %w", err)
		}
		mode = m
	}
	if mode == failover.RejoinCatchup && !sequenced {
		return nil, fmt.Errorf("--rejoin: catchup needs --sequenced (the order streams carry the catch-up jobs); use manual or trust")
	}
	if r.RejoinMargin <= 0 {
		return nil, fmt.Errorf("--rejoin-margin: %v is not positive", r.RejoinMargin)
	}
	if r.RejoinResetAfter < 0 {
		return nil, fmt.Errorf("--rejoin-reset-after: %v is negative", r.RejoinResetAfter)
	}
	if r.RejoinVerify < 0 {
		return nil, fmt.Errorf("--rejoin-verify-every: %v is negative", r.RejoinVerify)
	}
	lc := &middlebox.LifecycleConfig{LifecycleConfig: failover.LifecycleConfig{Mode: mode, Margin: r.RejoinMargin, ResetAfter: r.RejoinResetAfter,
		VerifyEvery: r.RejoinVerify}}
	if r.RejoinResetAfter == 0 {
		lc.ResetAfter = -1 // never
	}
	if r.RejoinVerify == 0 {
		lc.VerifyEvery = time.Nanosecond // no limit (0 is the default's)
	}
	if sequenced && mode != failover.RejoinTrust {
		lc.StatePath = filepath.Join(filepath.Dir(seqState), "lifecycle.json")
		lc.StateLost = r.RejoinStateLost
	} else if r.RejoinStateLost {
		return nil, fmt.Errorf("--rejoin-state-lost: the lifecycle state is kept only with --sequenced and --rejoin catchup or manual")
	}
	return lc, nil
}
