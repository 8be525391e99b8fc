package ackmerge

import (
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// synAck handles a branch's SYN-ACK.
func (f *Flow) synAck(k int, p *packet.TCP, now time.Time, out *Out) {
	b := &f.br[k]
	if !p.Has(packet.FlagACK) || seqnum.Value(p.Ack()) != f.cliISS.Add(1) || f.state == StateNew {
		f.stats.Invalid++
		return
	}
	seq := seqnum.Value(p.Seq())
	if b.answered {
		f.stats.Merged++
		if seq != b.iss {
			f.stats.Invalid++
			return
		}
		// A retransmitted SYN-ACK: our SYN-ACK or the client's ACK was
		// lost. Answer for the flow once (from the first live branch).
		if (f.state == StateEstablished) && k == firstLive(f.br) {
			f.sendSynAck(out)
		}
		return
	}
	o, err := p.SynOptions()
	if err != nil || f.state != StateSynSent {
		f.stats.Invalid++
		return
	}
	b.answered = true
	b.iss = seq
	b.mss = o.MSS
	if lim := b.t.mssLimit(); lim > 0 && (b.mss == 0 || b.mss > lim) {
		b.mss = lim
	}
	b.wsOK = o.WSOK && f.cliWSOK
	if b.wsOK {
		b.ws = o.WS
	}
	b.synWnd = p.Window()
	b.sackOK = o.SACKOK
	if !f.haveRef {
		f.haveRef, f.issRef = true, seq
	}
	b.off = f.issRef.Size(seq)
	b.acked = f.cliISS.Add(1)
	b.edge = b.acked.Add(seqnum.Size(b.synWnd))
	b.cov = f.issRef.Add(1)
	b.wl1 = b.cov
	f.nans++
	f.stats.Merged++
	if f.nans == f.live {
		f.establish(now, out)
	}
}

// establish sends the one SYN-ACK to the client.
func (f *Flow) establish(now time.Time, out *Out) {
	if f.live < f.cfg.MinReplicas || f.live == 0 {
		f.resetClient(CauseMinReplicas, now, out)
		return
	}
	f.state = StateEstablished
	f.sndNxt = f.issRef.Add(1)
	f.cliAcked = f.sndNxt
	f.finSent = false
	if f.cliWSOK {
		var ws uint8
		for k := range f.br {
			if b := &f.br[k]; !b.removed && b.ws > ws {
				ws = b.ws
			}
		}
		f.facingWS = ws
	}
	f.sackOK = f.cliSACK
	for k := range f.br {
		if b := &f.br[k]; !b.removed && !b.sackOK {
			f.sackOK = false
		}
	}
	f.recompute()
	f.sentAck, f.sentEdge = f.minAck, f.minEdge
	f.sendSynAck(out)
	out.Events = append(out.Events, Event{Kind: EvEstablished, Branch: -1})
}

func (f *Flow) sendSynAck(out *Out) {
	var mss uint16 = 0xffff
	var wnd uint16 = 0xffff
	for k := range f.br {
		b := &f.br[k]
		if b.removed {
			continue
		}
		m := b.mss
		if m == 0 {
			m = 536
			if f.client.Addr().Is6() {
				m = 1220
			}
		}
		mss = min(mss, m)
		wnd = min(wnd, b.synWnd)
	}
	var opts [12]byte
	opts[0], opts[1] = packet.OptMSS, 4
	opts[2], opts[3] = byte(mss>>8), byte(mss)
	n := 4
	if f.cliWSOK {
		opts[n], opts[n+1], opts[n+2], opts[n+3] = packet.OptNOP, packet.OptWindowScale, 3, f.facingWS
		n += 4
	}
	if f.sackOK {
		opts[n], opts[n+1], opts[n+2], opts[n+3] = packet.OptNOP, packet.OptNOP, packet.OptSACKPermitted, 2
		n += 4
	}
	f.build(out, ToClient, f.vip, f.client, uint32(f.issRef), uint32(f.cliISS)+1,
		packet.FlagSYN|packet.FlagACK, wnd, opts[:n])
}
