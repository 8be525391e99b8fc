package ackmerge

import (
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
)

// removeBranch takes k out of the flow and recomputes.
func (f *Flow) removeBranch(k int, cause Cause, now time.Time, out *Out) {
	b := &f.br[k]
	b.removed, b.cause = true, cause
	f.live--
	if b.answered {
		f.nans--
	}
	f.stats.Shrinks++
	if cause == CauseDivergence {
		f.stats.Divergences++
	}
	out.Events = append(out.Events, Event{Kind: EvBranchRemoved, Branch: k, Cause: cause})
	if cause != CauseRST && b.answered {
		f.sendRST(out, k, f.client, b.t.Addr, uint32(b.acked), 0, false)
	}
	switch f.state {
	case StateSynSent:
		if f.live < f.cfg.MinReplicas || f.live == 0 {
			f.resetClient(CauseMinReplicas, now, out)
		} else if f.nans == f.live {
			f.establish(now, out)
		}
	case StateEstablished, StateLinger:
		if f.live < f.cfg.MinReplicas || f.live == 0 {
			f.resetClient(CauseMinReplicas, now, out)
			return
		}
		f.recompute()
		for j := range f.br {
			f.br[j].behindSince = time.Time{}
		}
		f.updateLag(-1, false, now)
		f.heldDue = f.heldLen() > 0
		if f.sentAck.LessThan(f.minAck) || f.sentEdge.LessThan(f.minEdge) {
			f.sentAck, f.sentEdge = f.minAck, f.minEdge
			f.build(out, ToClient, f.vip, f.client, uint32(f.sndNxt), uint32(f.minAck),
				packet.FlagACK, f.clientWindow(), nil)
		}
		f.checkClosed(now)
	}
}

// resetClient sends the client a RST it accepts and every live branch one.
func (f *Flow) resetClient(cause Cause, now time.Time, out *Out) {
	if f.state == StateSynSent {
		// The client is in SYN-SENT: a RST is accepted if it acks the SYN.
		f.sendRST(out, ToClient, f.vip, f.client, 0, uint32(f.cliISS)+1, true)
	} else {
		// Linux accepts a RST only at rcv.nxt exactly: the client's last
		// ack, or what we sent if it has not acked it all yet.
		f.sendRST(out, ToClient, f.vip, f.client, uint32(f.cliAcked), uint32(f.minAck), true)
		if f.sndNxt != f.cliAcked {
			f.sendRST(out, ToClient, f.vip, f.client, uint32(f.sndNxt), uint32(f.minAck), true)
		}
	}
	for k := range f.br {
		if b := &f.br[k]; !b.removed && b.answered {
			f.sendRST(out, k, f.client, b.t.Addr, uint32(b.acked), 0, false)
		}
	}
	f.state, f.cause = StateReset, cause
	f.doneAt = now.Add(f.cfg.Linger)
	out.Events = append(out.Events, Event{Kind: EvClientReset, Branch: -1, Cause: cause})
}

// checkClosed moves to linger once both directions are closed and
// acknowledged.
func (f *Flow) checkClosed(now time.Time) {
	if f.state != StateEstablished || !f.cliFin || !f.finSent {
		return
	}
	if f.cliFinAt.LessThan(f.minAck) && f.coverEnd.LessThanEq(f.cliAcked) {
		f.state = StateLinger
		f.doneAt = now.Add(f.cfg.Linger)
	}
}

func (f *Flow) finish(cause Cause, out *Out) {
	if f.state == StateDone {
		return
	}
	if cause == CauseNone {
		cause = f.cause
		if cause == CauseNone {
			cause = CauseClosed
		}
	}
	f.state, f.cause = StateDone, cause
	out.Events = append(out.Events, Event{Kind: EvDone, Branch: -1, Cause: cause})
}
