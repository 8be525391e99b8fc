package ackmerge

import (
	"hash/maphash"
	"math/bits"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
)

// Reply verification (docs/design.md section 4, "Reply verification"):
// every live branch must send the same reply bytes, so the flow compares
// them by hash over agreed ranges, without buffering a byte and in bounded
// memory.
//
// Each branch hashes (maphash, one secret seed per flow) the reply bytes
// it sends, in stream offsets (the reference space, from the first reply
// byte), in order and only while they arrive contiguously. The stream is
// cut into chunks at fixed offsets (every verifyChunk bytes); a branch's
// hash runs from the start of the current chunk to its position. A
// comparison point ("slot") is a stream offset at which branches report
// their hash of [chunk start, offset):
//
//   - every chunk end, and
//   - a quiescent point: where a branch stops after a pushed segment (PSH
//     or FIN: the end of one reply write) while another branch has not got
//     there yet. Request/response traffic ("+OK\r\n" from every DC) is
//     compared there, on the first forked read, before the bytes are
//     forwarded.
//
// A branch that reaches a slot's offset by hashing reports there, even in
// the middle of a segment. A slot is settled once every live branch's
// position has passed it, by vote among the live branches that reported.
// When every live branch reported, the largest group of equal hashes wins
// and a tie goes to the group holding the branch first in the flow's
// branch order (branch 0 is the most preferred DC; with two branches, the
// second one goes). When some live branch could not report (a hole, or it
// passed before the point opened), only a group holding more than half of
// the reports wins: an even split with a vote missing removes nobody (it
// is counted). Branches outside the winning group are removed with
// CauseReplyMismatch; the group is never empty, so the last branch is
// never removed. Fewer than two reports compare nothing.
//
// Holes. A branch's missing bytes may never be retransmitted (the client
// acknowledged them from another branch's copy), so a segment that starts
// past a branch's position breaks the branch's hash for that chunk: its
// position jumps to the next chunk start and it hashes again from there.
// It reports at no slot in between and those chunks count as unverified,
// never as mismatches. Retransmitted bytes below the position are not
// hashed again.
//
// Memory is verifySlots slots of one hash per branch, plus one maphash
// state per branch. A slot is opened only while the table has room, so a
// branch more than verifySlots chunks ahead of the slowest one is not
// verified for the chunks it passes while the table is full (the
// slowest branch later opens them alone: unverified).
const (
	verifyChunk    = 4096 // bytes per chunk
	verifySlots    = 16   // comparison points pending at once
	verifyPartials = 4    // of which quiescent points, at most
	verifyMaxBr    = 64   // verification covers flows of up to 64 branches
)

// ReplyTail is how many of its last hashed reply bytes a branch keeps, so
// that a mismatch can be shown (Flow.ReplyTail).
const ReplyTail = 48

// vbranch is one branch's hashing state.
type vbranch struct {
	h     maphash.Hash // bytes [chunk start of pos, pos)
	pos   uint64       // stream offset of the next byte to hash
	tail  [ReplyTail]byte
	tailN int // tail[ReplyTail-tailN:] are the bytes [pos-tailN, pos)
}

// keepTail appends hashed bytes d (ending at pos) to the branch's tail.
func (vb *vbranch) keepTail(d []byte) {
	if len(d) >= ReplyTail {
		copy(vb.tail[:], d[len(d)-ReplyTail:])
		vb.tailN = ReplyTail
		return
	}
	copy(vb.tail[:], vb.tail[len(d):])
	copy(vb.tail[ReplyTail-len(d):], d)
	vb.tailN = min(ReplyTail, vb.tailN+len(d))
}

// ReplyTail returns the last reply bytes (at most ReplyTail) branch k sent
// that the verification hashed, and the stream offset they end at; empty
// when verification is off or the branch's bytes since a hole were none.
// The slice aliases the flow's state: copy it before the next Step.
func (f *Flow) ReplyTail(k int) (end uint64, b []byte) {
	if !f.ver.on || k < 0 || k >= len(f.ver.br) {
		return 0, nil
	}
	vb := &f.ver.br[k]
	return vb.pos, vb.tail[ReplyTail-vb.tailN:]
}

// vslot is one comparison point.
type vslot struct {
	at    uint64 // stream offset the hashes end at
	got   uint64 // branches that reported, bit k
	row   uint8  // its row of hashes in verifier.hash (one per branch, valid where got)
	chunk bool   // a chunk end (else a quiescent point)
}

// verifier is a flow's verification state.
type verifier struct {
	on       bool
	br       []vbranch
	slot     []vslot  // verifySlots of them; slot[:n] pending, sorted by at
	hash     []uint64 // verifySlots rows of len(br) hashes
	n        int
	partials int    // pending quiescent points
	floor    uint64 // the last settled offset: slots open only past it
	agreed   uint64 // the last offset at which the branches agreed
	chunks   uint64 // the last chunk end accounted for in the stats
}

func (v *verifier) init(n int, cfg *Config) {
	if cfg.NoVerify || n < 2 || n > verifyMaxBr {
		return
	}
	v.on = true
	seed := maphash.MakeSeed()
	v.br = make([]vbranch, n)
	for k := range v.br {
		v.br[k].h.SetSeed(seed)
	}
	v.slot = make([]vslot, verifySlots)
	v.hash = make([]uint64, n*verifySlots)
	for i := range v.slot {
		v.slot[i].row = uint8(i)
	}
}

// h is the hash branch k reported at slot s.
func (v *verifier) h(s *vslot, k int) *uint64 { return &v.hash[int(s.row)*len(v.br)+k] }

func chunkStart(off uint64) uint64 { return off - off%verifyChunk }

// find returns the index of the first pending slot at or past off.
func (v *verifier) find(off uint64) int {
	i := 0
	for i < v.n && v.slot[i].at < off {
		i++
	}
	return i
}

// open inserts an empty slot at off before index i (the caller found i
// with find(off) and checked there is room); it returns the slot.
func (v *verifier) open(i int, off uint64, chunk bool) *vslot {
	free := v.slot[v.n]
	copy(v.slot[i+1:v.n+1], v.slot[i:v.n])
	free.at, free.chunk, free.got = off, chunk, 0
	v.slot[i] = free
	v.n++
	if !chunk {
		v.partials++
	}
	return &v.slot[i]
}

// pop removes the first pending slot.
func (v *verifier) pop() {
	first := v.slot[0]
	if !first.chunk {
		v.partials--
	}
	copy(v.slot[:v.n-1], v.slot[1:v.n])
	v.slot[v.n-1] = first
	v.n--
}

// verifyFeed hashes branch k's reply bytes data, which start at stream
// offset off, reporting at every comparison point they reach. push says
// the segment ended a write (PSH or FIN): its end is a quiescent point;
// fin says it ended the stream.
func (f *Flow) verifyFeed(k int, off uint64, data []byte, push, fin bool) {
	v := &f.ver
	vb := &v.br[k]
	end := off + uint64(len(data))
	if off > vb.pos {
		// A hole before this segment: no hash of this chunk from this
		// branch. Start again at the next chunk.
		next := chunkStart(off + verifyChunk - 1)
		if next > vb.pos {
			vb.pos = next
			vb.h.Reset()
			vb.tailN = 0
		}
	}
	for vb.pos < end {
		stop := min(end, chunkStart(vb.pos)+verifyChunk)
		i := v.find(vb.pos + 1)
		if i < v.n && v.slot[i].at < stop {
			stop = v.slot[i].at
		}
		vb.h.Write(data[vb.pos-off : stop-off])
		vb.keepTail(data[vb.pos-off : stop-off])
		vb.pos = stop
		switch {
		case stop%verifyChunk == 0:
			f.verifyReport(k, stop, true, false)
			vb.h.Reset()
		case i < v.n && v.slot[i].at == stop:
			v.slot[i].got |= 1 << k
			*v.h(&v.slot[i], k) = vb.h.Sum64()
		}
	}
	if push && vb.pos == end && end%verifyChunk != 0 {
		f.verifyReport(k, end, false, fin)
	}
}

// verifySegment feeds the payload of segment s from branch k, just
// absorbed, to the verification and settles what it can.
func (f *Flow) verifySegment(k int, p *packet.TCP, s *replySeg, now time.Time, out *Out) {
	b := &f.br[k]
	if f.nans < 2 || b.fin && b.finAt.LessThan(s.end) {
		return // nothing to compare with, or bytes after its FIN (dropped)
	}
	end := b.covBytes - uint64(s.end.Size(b.cov)) // stream offset of s.end
	data := p.Payload()
	if uint64(len(data)) > end {
		data = data[uint64(len(data))-end:] // bytes before the stream: impossible
	}
	f.verifyFeed(k, end-uint64(len(data)), data, s.fin || p.Has(packet.FlagPSH), s.fin)
	f.verifySettle(now, out)
}

// verifyReport records branch k's hash at off (a chunk end when chunk;
// the end of the stream when fin), opening a slot there if none is
// pending and one is worth it.
func (f *Flow) verifyReport(k int, off uint64, chunk, fin bool) {
	v := &f.ver
	i := v.find(off)
	if i == v.n || v.slot[i].at != off {
		if off <= v.floor || v.n == verifySlots {
			return
		}
		if !chunk {
			// A quiescent point is worth a slot only while some other
			// live branch has yet to get there (a branch already past it
			// cannot report: the vote is then decisive only with a strict
			// majority of the reports, so a point behind a branch's
			// position misleads nobody). The end of the stream may take a
			// slot past verifyPartials.
			if v.partials >= verifyPartials && !fin || !f.verifyAwaited(k, off) {
				return
			}
		}
		v.open(i, off, chunk)
	}
	s := &v.slot[i]
	s.got |= 1 << k
	*v.h(s, k) = v.br[k].h.Sum64()
}

// verifyAwaited reports whether some live branch other than k has not
// reached off yet (and so may still report there).
func (f *Flow) verifyAwaited(k int, off uint64) bool {
	for j := range f.br {
		if j != k && f.br[j].counts() && f.ver.br[j].pos < off {
			return true
		}
	}
	return false
}

// verifyLive is the mask of live branches taking part in the merge.
func (f *Flow) verifyLive() uint64 {
	var m uint64
	for k := range f.br {
		if f.br[k].counts() {
			m |= 1 << k
		}
	}
	return m
}

// verifySettle settles, oldest first, the pending comparison points every
// live branch has passed, and removes the branches outside each one's
// majority. Call after absorbing a branch segment, before forwarding it.
func (f *Flow) verifySettle(now time.Time, out *Out) {
	v := &f.ver
	for v.n > 0 && (f.state == StateEstablished || f.state == StateLinger) {
		live := f.verifyLive()
		if bits.OnesCount64(live) < 2 {
			v.n, v.partials = 0, 0 // nothing left to compare with
			return
		}
		s := &v.slot[0]
		for m := live; m != 0; m &= m - 1 {
			if v.br[bits.TrailingZeros64(m)].pos < s.at {
				return // some live branch may still report here
			}
		}
		at, chunk, got := s.at, s.chunk, s.got&live
		losers, decisive := v.losers(s, got, got == live)
		peer := bits.TrailingZeros64(got &^ losers) // one of the winners
		v.pop()
		v.floor = at
		if chunk {
			// Chunk ends no branch could report at (every copy of the
			// chunk had a hole) are unverified too.
			f.stats.RepliesUnverified += (at-v.chunks)/verifyChunk - 1
			v.chunks = at
		}
		switch {
		case bits.OnesCount64(got) < 2:
			if chunk {
				f.stats.RepliesUnverified++
			}
		case losers == 0:
			if got == live {
				v.agreed = at
				f.stats.RepliesVerified++
			} else if chunk {
				f.stats.RepliesUnverified++
			}
		case !decisive:
			// Some live branch did not report and the reporters split
			// evenly: its vote could go either way. Count, remove none.
			f.stats.ReplyMismatches++
			if chunk {
				f.stats.RepliesUnverified++
			}
		default:
			f.stats.ReplyMismatches++
			from := max(chunkStart(at-1), v.agreed)
			for m := losers; m != 0; m &= m - 1 {
				j := bits.TrailingZeros64(m)
				if f.live <= 1 || f.state != StateEstablished && f.state != StateLinger {
					return
				}
				if f.br[j].removed {
					continue
				}
				ev := len(out.Events)
				f.removeBranch(j, CauseReplyMismatch, now, out)
				if ev < len(out.Events) && out.Events[ev].Kind == EvBranchRemoved {
					out.Events[ev].Offset = from
					out.Events[ev].Peer = peer
				}
			}
			v.agreed = at
		}
	}
}

// losers returns the branches of got whose hash is outside the largest
// group of equal hashes, and whether the vote is decisive: the group
// holds more than half of got, or every live branch reported (all) and
// of equally large groups the one holding the lowest branch index wins.
func (v *verifier) losers(s *vslot, got uint64, all bool) (l uint64, decisive bool) {
	best, bestN, tie := -1, 0, false
	for m := got; m != 0; m &= m - 1 {
		k := bits.TrailingZeros64(m)
		c := 0
		for m2 := got; m2 != 0; m2 &= m2 - 1 {
			if *v.h(s, bits.TrailingZeros64(m2)) == *v.h(s, k) {
				c++
			}
		}
		switch {
		case c > bestN:
			best, bestN, tie = k, c, false
		case c == bestN && *v.h(s, k) != *v.h(s, best):
			tie = true
		}
	}
	for m := got; m != 0; m &= m - 1 {
		if k := bits.TrailingZeros64(m); *v.h(s, k) != *v.h(s, best) {
			l |= 1 << k
		}
	}
	return l, all || !tie && 2*bestN > bits.OnesCount64(got)
}
