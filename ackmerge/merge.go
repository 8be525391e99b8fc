package ackmerge

import "time"

// Merge upkeep: the merged values after every change, the lagging-branch
// clocks, and the removal of branches that lose the FIN vote. The
// arithmetic itself is in quorum.go.

// recompute the merged values over the live branches.
func (f *Flow) recompute() {
	var m merged
	ok := mergeMin(f.br, &m)
	f.minHolder = m.holder
	if !ok {
		return
	}
	f.minAck, f.minEdge, f.minCov, f.coverEnd = m.ack, m.edge, m.cov, m.coverEnd
}

// updateLag tracks, per branch, since when it holds the others back (it
// has the lowest ack or coverage while some branch is ahead) without
// progress. Call after recompute.
func (f *Flow) updateLag(k int, progressed bool, now time.Time) {
	maxAck, minCov, maxCov := spread(f.br)
	for j := range f.br {
		b := &f.br[j]
		if !b.counts() {
			continue
		}
		behind := b.acked == f.minAck && f.minAck.LessThan(maxAck) ||
			b.coverFin() == minCov && minCov.LessThan(maxCov)
		switch {
		case !behind:
			b.behindSince = time.Time{}
		case b.behindSince.IsZero() || j == k && progressed:
			b.behindSince = now
		}
	}
}

// checkDivergence drops branches whose reply stream provably differs from
// the majority's: a FIN at another offset, or bytes past another's FIN.
func (f *Flow) checkDivergence(now time.Time, out *Out) {
	best, decided := finVote(f.br)
	if !decided {
		return
	}
	for k := range f.br {
		if b := &f.br[k]; b.counts() && !b.agrees(best) {
			f.removeBranch(k, CauseDivergence, now, out)
			if f.state != StateEstablished && f.state != StateLinger {
				return
			}
		}
	}
}
