package ackmerge

import (
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Held reply bytes (beyond the paper): the reply bytes a branch sent past
// the agreed coverage (what every live branch has sent) are not forwarded,
// and their sender believes them in flight. When the branches that had
// not sent them leave the flow, those bytes become deliverable, yet
// nothing would make their sender send them again before its
// retransmission timeout: srtt + 4 rttvar, about 0.8 s on a 340 ms round
// trip, doubled for each timeout it already spent while the dead branch
// held the coverage back. A branch removal thus stalled the connection for
// up to a second and a half after the failover decision (issue 9, item 8).
//
// So the flow keeps a copy of the first Config.HoldBytes bytes past the
// forwarded stream, taken from the first branch that sends them, and
// delivers them to the client as soon as a removal makes them agreed,
// provided that branch is still in the flow (so a branch dropped for a
// reply mismatch never has its bytes delivered this way). The
// copy is bounded per flow, is dropped as soon as the bytes are forwarded
// from a branch segment, and holds only what the client may receive once
// the lagging branches are gone: nothing reaches the client before every
// live branch has sent it.

// heldLen is the number of held bytes.
func (f *Flow) heldLen() int { return len(f.held) - f.heldOff }

// dropHeld forgets held bytes the client has been sent (below sndNxt).
func (f *Flow) dropHeld() {
	n := f.heldLen()
	if n > 0 && f.heldAt.LessThan(f.sndNxt) {
		n = min(n, int(f.heldAt.Size(f.sndNxt)))
		f.heldOff += n
		f.heldAt = f.heldAt.Add(seqnum.Size(n))
	}
	if f.heldLen() == 0 {
		f.held, f.heldOff = f.held[:0], 0
	}
}

// keep copies the bytes of reply segment s (payload, in the reference
// space) that lie past the agreed coverage and extend the held bytes
// contiguously, up to Config.HoldBytes. Call after recompute and before
// forward (which rewrites the payload in place).
func (f *Flow) keep(k int, s *replySeg, payload []byte) {
	if f.cfg.HoldBytes <= 0 || s.plen == 0 || len(payload) != s.plen {
		return
	}
	f.dropHeld()
	if f.heldLen() == 0 {
		f.heldAt, f.heldFrom = f.minCov, k
	}
	hi := f.heldAt.Add(seqnum.Size(f.heldLen()))
	if k != f.heldFrom {
		// One source at a time: its bytes go only if it stays in the
		// flow. A branch that sent every held byte and more becomes the
		// source (the near DC's copy is replaced by the far DC's once the
		// far one has overtaken the near one's last coverage).
		if f.heldAt.LessThan(s.seq) || !hi.LessThan(s.end) {
			return
		}
		f.held, f.heldOff, f.heldFrom = f.held[:0], 0, k
		hi = f.heldAt
	}
	if hi.LessThan(s.seq) || !hi.LessThan(s.end) {
		return // a gap before it, or nothing new
	}
	n := min(int(hi.Size(s.end)), f.cfg.HoldBytes-f.heldLen())
	if n <= 0 {
		f.stats.HoldFull++
		return
	}
	if f.heldOff > 0 && len(f.held)+n > cap(f.held) {
		f.held = f.held[:copy(f.held, f.held[f.heldOff:])]
		f.heldOff = 0
	}
	from := int(s.seq.Size(hi))
	f.held = append(f.held, payload[from:from+n]...)
}

// sendHeldDue runs sendHeld after a removal, once the segment being
// processed (if any) has been forwarded, so no byte goes out twice.
func (f *Flow) sendHeldDue(out *Out) {
	if !f.heldDue {
		return
	}
	f.heldDue = false
	if f.state == StateEstablished || f.state == StateLinger {
		f.sendHeld(out)
	}
}

// sendHeld delivers to the client the held bytes that every live branch
// has now sent (after a branch removal raised the coverage), in segments
// of at most the client's MSS.
func (f *Flow) sendHeld(out *Out) {
	f.dropHeld()
	if f.heldLen() > 0 && f.br[f.heldFrom].removed {
		// Their source left the flow (a reply mismatch, a RST): its bytes
		// are not the survivors' to vouch for.
		f.held, f.heldOff = f.held[:0], 0
	}
	n := f.heldLen()
	if n == 0 || !f.heldAt.LessThan(f.minCov) {
		return
	}
	n = min(n, int(f.heldAt.Size(f.minCov)))
	mss := int(f.cliMSS)
	data := f.held[f.heldOff : f.heldOff+n]
	for len(data) > 0 {
		c := min(len(data), mss)
		f.buildData(out, ToClient, f.vip, f.client, uint32(f.heldAt), uint32(f.minAck),
			packet.FlagACK|packet.FlagPSH, f.clientWindow(), nil, data[:c])
		f.stats.HeldSent += uint64(c)
		data = data[c:]
		f.heldAt = f.heldAt.Add(seqnum.Size(c))
		f.heldOff += c
	}
	if f.sndNxt.LessThan(f.heldAt) {
		f.sndNxt = f.heldAt
	}
	f.sentAck, f.sentEdge = f.minAck, f.minEdge
	f.dropHeld()
}
