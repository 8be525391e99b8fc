package ackmerge

import (
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Branches -> client: a branch segment is absorbed into the merge (its
// acknowledgement and coverage), then the part of it every live branch has
// sent and the client has not acknowledged goes on to the client, rewritten
// into the reference branch's sequence space.

// replySeg is what one branch segment carries, in the reference space.
type replySeg struct {
	ack      seqnum.Value // its acknowledgement of the client stream
	seq, end seqnum.Value // its payload [seq, end)
	segEnd   seqnum.Value // end, plus one for a FIN
	plen     int
	fin      bool
	advanced bool // the branch's ack or coverage moved forward
}

func (f *Flow) fromBranch(k int, buf []byte, p *packet.TCP, now time.Time, out *Out) {
	b := &f.br[k]
	fl := p.Flags()
	switch {
	case b.removed || f.state == StateReset || f.state == StateDone:
		f.unfollowed(k, p, fl, out)
		return
	case fl&packet.FlagRST != 0:
		f.branchReset(k, now, out)
		return
	case fl&packet.FlagSYN != 0:
		f.synAck(k, p, now, out)
		return
	case !b.answered || f.state != StateEstablished && f.state != StateLinger || fl&packet.FlagACK == 0:
		f.stats.Invalid++
		return
	}
	var s replySeg
	if !f.absorb(b, p, fl, &s) {
		return
	}
	if f.ver.on && (s.plen > 0 || s.fin) {
		f.verifySegment(k, p, &s, now, out) // verify.go
		if b.removed || f.state != StateEstablished && f.state != StateLinger {
			return
		}
	}
	if f.fins > 0 {
		f.checkDivergence(now, out)
		if b.removed || f.state != StateEstablished && f.state != StateLinger {
			return
		}
	}
	if f.ver.on {
		if at, differ := f.heldMismatch(k, &s, p.Payload()); differ { // hold_check.go
			f.heldDisagree(k, at, now, out)
			if b.removed || f.state != StateEstablished && f.state != StateLinger {
				return
			}
		}
	}
	f.recompute()
	f.updateLag(k, s.advanced, now)
	f.keep(k, &s, p.Payload())
	if !f.forward(k, buf, p, &s, out) {
		return
	}
	f.checkClosed(now)
}

// unfollowed answers a segment from a branch the flow no longer follows:
// tell it to go away (its ack is its rcv.nxt), unless it is a RST itself.
func (f *Flow) unfollowed(k int, p *packet.TCP, fl uint8, out *Out) {
	if fl&packet.FlagRST == 0 && fl&packet.FlagACK != 0 && f.state != StateDone {
		f.sendRST(out, k, f.client, f.br[k].t.Addr, p.Ack(), 0, false)
	}
	f.stats.Merged++
}

// branchReset handles a RST from branch k.
func (f *Flow) branchReset(k int, now time.Time, out *Out) {
	if f.state == StateLinger {
		// Both directions are closed and acknowledged: a server that
		// already dropped its socket answers a late segment with RST.
		// Nothing failed; stop copying to it.
		b := &f.br[k]
		b.removed, b.cause = true, CauseClosed
		f.live--
		f.nans--
		f.stats.Merged++
		return
	}
	f.removeBranch(k, CauseRST, now, out)
}

// absorb records in s, and in branch b, what the segment proves: how much
// of the client stream b acknowledged, its window, and how much of the
// reply it has sent. It reports false for a segment that cannot be right.
func (f *Flow) absorb(b *branch, p *packet.TCP, fl uint8, s *replySeg) bool {
	s.ack, s.plen, s.fin = seqnum.Value(p.Ack()), p.PayloadLen(), fl&packet.FlagFIN != 0
	if f.cliNxt.LessThan(s.ack) {
		f.stats.Invalid++ // acknowledges bytes the client never sent
		return false
	}
	s.seq = seqnum.Value(p.Seq() - uint32(b.off))
	s.end = s.seq.Add(seqnum.Size(s.plen))
	s.segEnd = s.end
	if s.fin {
		s.segEnd = s.end.Add(1)
	}

	// The acknowledgement of the client stream, SACK blocks and window.
	if b.acked.LessThan(s.ack) {
		b.ackedBytes += uint64(b.acked.Size(s.ack))
		b.acked = s.ack
		s.advanced = true
	}
	if f.sackOK && s.ack == b.acked {
		b.recordSACK(p)
	}
	if s.ack == b.acked && b.wl1.LessThanEq(s.seq) {
		b.wl1 = s.seq
		b.edge = s.ack.Add(seqnum.Size(uint32(p.Window()) << b.ws))
	}

	// Reply bytes and FIN. A TCP sender sends its stream in order, so a
	// branch that sent byte x has sent every byte before it (the ones
	// missing here were lost on the way): coverage is the highest byte
	// seen, and a segment past a hole still proves what the branch has
	// sent.
	switch {
	case s.plen == 0 && !s.fin:
	case b.fin && b.finAt.LessThan(s.end):
		f.stats.Invalid++ // bytes after its own FIN
	default:
		if b.cov.LessThan(s.seq) {
			f.stats.OutOfOrder++ // a hole before it: still forwarded
		}
		if b.cov.LessThan(s.end) {
			b.covBytes += uint64(b.cov.Size(s.end))
			b.cov = s.end
			s.advanced = true
		}
		if s.fin && s.end == b.cov && !b.fin {
			b.fin, b.finAt = true, s.end
			f.fins++
		}
	}
	return true
}

// forward sends the client what it should see of segment s from branch k:
// the bytes in [max(seq, client acked), coverEnd), or an ACK. It reports
// false if the packet could not be rewritten.
func (f *Flow) forward(k int, buf []byte, p *packet.TCP, s *replySeg, out *Out) bool {
	b := &f.br[k]
	lo := s.seq
	if lo.LessThan(f.cliAcked) {
		lo = f.cliAcked
	}
	hi := s.segEnd
	if f.coverEnd.LessThan(hi) {
		hi = f.coverEnd
	}
	switch {
	case (s.plen > 0 || s.fin) && s.segEnd.LessThanEq(f.cliAcked) && s.segEnd.LessThanEq(f.coverEnd):
		// Wholly acknowledged by the client already, yet retransmitted:
		// this branch missed the client's ACK. Repeat that ACK to it (the
		// client may be gone already, e.g. after its TIME-WAIT).
		f.stats.Merged++
		f.build(out, k, f.client, b.t.Addr, uint32(f.cliNxt), uint32(f.cliAcked)+uint32(b.off),
			packet.FlagACK, f.branchWindow(b, f.cliWnd), nil)
	case lo.LessThan(hi):
		return f.forwardBytes(k, buf, p, s, lo, hi, out)
	case f.sentAck.LessThan(f.minAck) || f.sentEdge.LessThan(f.minEdge):
		f.pureAckInPlace(buf, p, k, out)
	case s.plen == 0 && !s.fin && !s.advanced && s.ack == b.acked && k == f.minHolder &&
		f.minAck == f.sentAck && f.minAck.LessThan(f.cliNxt):
		f.stats.DupAcks++
		f.pureAckInPlace(buf, p, k, out)
	default:
		f.stats.Merged++
	}
	return true
}

// forwardBytes trims segment s to [lo, hi) and sends it to the client in
// place.
func (f *Flow) forwardBytes(k int, buf []byte, p *packet.TCP, s *replySeg, lo, hi seqnum.Value, out *Out) bool {
	pEnd := hi
	if s.end.LessThan(pEnd) {
		pEnd = s.end
	}
	head := 0
	if s.seq.LessThan(lo) {
		head = int(s.seq.Size(lo))
	}
	if head > s.plen {
		head = s.plen
	}
	tail := int(pEnd.Size(s.end))
	keepFin := s.fin && hi == s.segEnd
	f.rewriteToClient(p, s.seq, k)
	if s.fin && !keepFin && tail == 0 {
		p.SetFlags(p.Flags() &^ packet.FlagFIN)
	}
	shift, err := p.TrimPayload(head, tail)
	if err != nil {
		f.stats.Invalid++
		return false
	}
	if head > 0 || tail > 0 {
		f.stats.Trimmed++
	}
	if f.sndNxt.LessThan(hi) {
		f.sndNxt = hi
	}
	if keepFin {
		f.finSent = true
	}
	f.emitInPlace(buf, shift, p, out)
	return true
}

// rewriteToClient turns a branch segment into one from the VIP with the
// client-visible seq, the merged ack and window.
func (f *Flow) rewriteToClient(p *packet.TCP, seq seqnum.Value, k int) {
	p.SetSrcAddr(f.vip.Addr())
	p.SetSrcPort(f.vip.Port())
	p.SetSeq(uint32(seq))
	p.SetAck(uint32(f.minAck))
	p.SetWindow(f.clientWindow())
	if p.HeaderLen() > p.IPHeaderLen()+20 {
		if f.sackOK && k == f.minHolder && f.br[k].acked == f.minAck {
			// The slowest branch's SACK blocks, cut down to what every
			// live branch holds: what the client's fast recovery needs.
			p.NopOptions(packet.OptTimestamps)
			f.mergeSACK(p, k)
		} else {
			p.NopOptions(packet.OptSACK, packet.OptTimestamps)
		}
	}
	f.sentAck = f.minAck
	f.sentEdge = f.minEdge
}

// clientWindow is the merged window in the client-visible scale.
func (f *Flow) clientWindow() uint16 {
	w := uint32(f.minAck.Size(f.minEdge)) >> f.facingWS
	return uint16(min(w, 0xffff))
}

func (f *Flow) pureAckInPlace(buf []byte, p *packet.TCP, k int, out *Out) {
	f.rewriteToClient(p, f.sndNxt, k)
	if p.Has(packet.FlagFIN) {
		p.SetFlags(p.Flags() &^ packet.FlagFIN)
	}
	if _, err := p.TrimPayload(0, p.PayloadLen()); err != nil {
		f.stats.Invalid++
		return
	}
	f.emitInPlace(buf, 0, p, out)
}

func (f *Flow) emitInPlace(buf []byte, shift int, p *packet.TCP, out *Out) {
	out.Pkts = append(out.Pkts, Emit{To: ToClient, Buf: buf[shift : out.Offset+shift+len(p.Buf)], InPlace: true})
	f.stats.ToClient++
}
