package ackmerge

import (
	"bytes"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Reply bytes checked against the held copy before they are forwarded.
//
// The hash vote (verify.go) settles a point once every live branch has
// passed it; the client, though, is sent a byte as soon as every live
// branch has sent it, taken from the segment of the branch that sent it
// last. For a short reply that differs in length between DCs (a corrupt or
// stale record: "$7\r\ncorrupt\r\n" against "$11\r\ngood:victim\r\n"),
// each branch reports at its own quiescent point and no point ever has
// two reports, so the last sender's bytes reached the client unverified:
// a client read a value the other DC never held, and the connection was
// left misaligned by the length difference.
//
// The held copy (hold.go) already holds, from the first branch that sent
// them, the bytes past the forwarded stream. So before a segment of
// another live branch is forwarded, its bytes that overlap the held copy
// are compared with it, byte for byte; the held source and the sender
// disagree where they differ:
//
// With two live branches that is a tie, settled as the vote settles one:
// the branch first in the flow's branch order stays, the other goes with
// CauseReplyMismatch and the offset of the first differing byte. If the
// sender goes, its bytes are not forwarded and the removal delivers the
// held copy (sendHeld); if the held source goes, its copy is dropped and
// the sender's bytes go on.
//
// With three or more live branches the check stays off: two copies
// cannot outvote the others, and holding back the sender's bytes while
// their coverage counts let the held source's own next segment forward
// its (odd) bytes up to that coverage (found by TestForkNSReplyMismatchDropsDC).
// There the vote already keeps odd bytes from the client: a point opens
// where the first branch stops, and a branch passing it reports there
// (TestVerifyDifferentLengthNeverForwardedWithThree).
//
// Cost: one comparison (bytes.Equal) of the bytes both sent, only for
// segments of a branch other than the held source while a copy is held
// (the slower branches' segments); nothing is allocated. BenchmarkVerifyCost:
// about 20 ns more per segment (docs/design.md section 4).

// heldMismatch reports whether segment s of branch k (payload, in the
// reference space) differs from the held copy where both hold bytes the
// client has not been sent, and the first byte that differs.
func (f *Flow) heldMismatch(k int, s *replySeg, payload []byte) (at seqnum.Value, differ bool) {
	if f.live != 2 || f.cfg.HoldBytes <= 0 || s.plen == 0 || len(payload) != s.plen || f.heldFrom == k {
		return 0, false
	}
	f.dropHeld()
	n := f.heldLen()
	if n == 0 || f.br[f.heldFrom].removed {
		return 0, false
	}
	lo, hi := s.seq, s.end
	if lo.LessThan(f.heldAt) {
		lo = f.heldAt
	}
	if he := f.heldAt.Add(seqnum.Size(n)); he.LessThan(hi) {
		hi = he
	}
	if !lo.LessThan(hi) {
		return 0, false
	}
	a := payload[s.seq.Size(lo):s.seq.Size(hi)]
	b := f.held[f.heldOff+int(f.heldAt.Size(lo)):][:len(a)]
	if bytes.Equal(a, b) {
		return 0, false
	}
	i := 0
	for a[i] == b[i] {
		i++
	}
	return lo.Add(seqnum.Size(i)), true
}

// heldDisagree settles a difference at at between a segment of branch k
// and the held copy, with two live branches: the later branch in the
// order is removed (if that is k, its bytes must not be forwarded).
func (f *Flow) heldDisagree(k int, at seqnum.Value, now time.Time, out *Out) {
	h := f.heldFrom
	f.stats.ReplyMismatches++
	loser, winner := max(h, k), min(h, k)
	// The stream offset of at: branch k's covBytes counts its stream up
	// to its coverage (absorb already took s in).
	b := &f.br[k]
	off := b.covBytes - uint64(at.Size(b.cov))
	ev := len(out.Events)
	f.removeBranch(loser, CauseReplyMismatch, now, out)
	if ev < len(out.Events) && out.Events[ev].Kind == EvBranchRemoved {
		out.Events[ev].Offset = off
		out.Events[ev].Peer = winner
	}
}
