package ackmerge

import "gvisor.dev/gvisor/pkg/tcpip/seqnum"

// The merge arithmetic over the branches, free of packets and time (the way
// raft keeps its quorum rules apart): what every live branch has
// acknowledged and sent, and which end of the reply stream the branches
// vote for once some of them have closed. A branch counts when it is live
// (not removed) and has answered the SYN.

// counts reports whether branch b takes part in the merge.
func (b *branch) counts() bool { return !b.removed && b.answered }

// agrees reports whether branch b's reply stream is consistent with one
// that ends (FIN) at end: its own FIN is there, or it has sent nothing past
// it yet.
func (b *branch) agrees(end seqnum.Value) bool {
	if b.fin {
		return b.finAt == end
	}
	return b.cov.LessThanEq(end)
}

// merged are the minima over the counting branches.
type merged struct {
	ack, edge, cov seqnum.Value // lowest acknowledgement, right edge, coverage
	coverEnd       seqnum.Value // cov, plus one when the FINs of all are covered
	holder         int          // first branch whose ack is the lowest
}

// mergeMin computes into m the minima over the counting branches of br; it
// reports false, with m.holder -1 and the rest of m untouched, when no
// branch counts.
func mergeMin(br []branch, m *merged) (ok bool) {
	m.holder = -1
	allFin := true
	for k := range br {
		b := &br[k]
		if !b.counts() {
			continue
		}
		if !ok {
			m.ack, m.edge, m.cov = b.acked, b.edge, b.cov
			ok = true
		} else {
			if b.acked.LessThan(m.ack) {
				m.ack = b.acked
			}
			if b.edge.LessThan(m.edge) {
				m.edge = b.edge
			}
			if b.cov.LessThan(m.cov) {
				m.cov = b.cov
			}
		}
		if !b.fin {
			allFin = false
		}
	}
	if !ok {
		return false
	}
	for k := range br {
		if b := &br[k]; b.counts() && b.acked == m.ack {
			m.holder = k
			break
		}
	}
	m.coverEnd = m.cov
	if allFin {
		// After the FIN vote, every live FIN sits at one offset: the
		// first counting branch's tells where.
		for k := range br {
			if b := &br[k]; b.counts() {
				if b.finAt == m.cov {
					m.coverEnd = m.cov.Add(1)
				}
				break
			}
		}
	}
	return true
}

// spread is the highest acknowledgement and the lowest and highest
// coverage over the counting branches. Coverage counts the FIN: a branch
// whose FIN is missing while the others closed holds the client's FIN back.
func spread(br []branch) (maxAck, minCov, maxCov seqnum.Value) {
	first := true
	for k := range br {
		b := &br[k]
		if !b.counts() {
			continue
		}
		c := b.coverFin()
		if first || maxAck.LessThan(b.acked) {
			maxAck = b.acked
		}
		if first || maxCov.LessThan(c) {
			maxCov = c
		}
		if first || c.LessThan(minCov) {
			minCov = c
		}
		first = false
	}
	return maxAck, minCov, maxCov
}

// votes counts the branches that agree with a reply stream ending at end.
func votes(br []branch, end seqnum.Value) int {
	n := 0
	for k := range br {
		if b := &br[k]; b.counts() && b.agrees(end) {
			n++
		}
	}
	return n
}

// finVote decides, once some live branch has sent its FIN, where the reply
// stream ends when the branches disagree: a FIN at another offset, or bytes
// past another's FIN. decided is false when they all agree or when the vote
// is tied while some branch has not closed yet (it will break the tie);
// otherwise end is the winning end (the one most branches agree with; a
// tie with every branch closed goes to the first live branch, the most
// preferred DC) and every branch that does not agree with it must go.
func finVote(br []branch) (end seqnum.Value, decided bool) {
	var f0 seqnum.Value
	any, conflict := false, false
	for k := range br {
		b := &br[k]
		if b.removed || !b.fin {
			continue
		}
		if !any {
			f0, any = b.finAt, true
		} else if b.finAt != f0 {
			conflict = true
		}
	}
	if !any {
		return 0, false
	}
	if !conflict {
		for k := range br {
			if b := &br[k]; b.counts() && f0.LessThan(b.cov) {
				conflict = true
			}
		}
	}
	if !conflict {
		return 0, false
	}
	var best seqnum.Value
	bestScore := -1
	for j := range br {
		bj := &br[j]
		if bj.removed || !bj.fin {
			continue
		}
		if score := votes(br, bj.finAt); score > bestScore {
			best, bestScore = bj.finAt, score
		}
	}
	tie, undecided := false, false
	for j := range br {
		bj := &br[j]
		if !bj.counts() {
			continue
		}
		if !bj.fin {
			undecided = true
			continue
		}
		if bj.finAt != best {
			tie = tie || votes(br, bj.finAt) == bestScore
		}
	}
	if tie {
		if undecided {
			return 0, false
		}
		best = br[firstLive(br)].finAt
	}
	return best, true
}

// firstLive is the index of the first branch not removed, or -1.
func firstLive(br []branch) int {
	for k := range br {
		if !br[k].removed {
			return k
		}
	}
	return -1
}
