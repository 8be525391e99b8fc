package ackmerge

import (
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Client -> branches: the client's SYN, data, ACKs, FIN and RST, copied to
// every live branch with the destination, ack and window rewritten into
// that branch's view.

func (f *Flow) fromClient(buf []byte, p *packet.TCP, now time.Time, out *Out) {
	fl := p.Flags()
	switch {
	case f.state == StateDone:
		f.stats.Invalid++
		return
	case f.state == StateReset:
		// Answer with a RST the client accepts: its ack is its rcv.nxt.
		if fl&packet.FlagRST == 0 && fl&packet.FlagACK != 0 {
			f.sendRST(out, ToClient, f.vip, f.client, p.Ack(), uint32(f.sentAck), true)
		}
		return
	case fl&packet.FlagSYN != 0:
		if fl&(packet.FlagACK|packet.FlagRST|packet.FlagFIN) != 0 {
			f.stats.Invalid++
			return
		}
		seq := seqnum.Value(p.Seq())
		if f.state == StateNew {
			o, err := p.SynOptions()
			if err != nil {
				f.stats.Invalid++
				return
			}
			f.cliISS, f.cliNxt = seq, seq.Add(1)
			f.cliWSOK, f.cliWS = o.WSOK, o.WS
			f.cliMSS = o.MSS
			if f.cliMSS == 0 || f.cliMSS > 0xffff-60 {
				f.cliMSS = 536 // RFC 9293's default for IPv4
				if f.client.Addr().Is6() {
					f.cliMSS = 1220
				}
			}
			f.cliSACK = o.SACKOK && f.cfg.SACK
			f.synAt = now
			f.state = StateSynSent
		} else if seq != f.cliISS {
			f.stats.Invalid++ // a different connection on the same tuple
			return
		}
		var err error
		if f.cfg.SACK {
			_, err = p.NopOptions(packet.OptTimestamps)
			if o, _ := p.SynOptions(); !o.SACKOK {
				f.cliSACK = false
			}
		} else {
			_, err = p.NopOptions(packet.OptSACKPermitted, packet.OptTimestamps)
		}
		if err != nil {
			f.stats.Invalid++
			return
		}
		f.fanOut(buf, p, true, out)
		return
	case f.state == StateNew:
		f.stats.Invalid++
		return
	case fl&packet.FlagRST != 0:
		// The client resets: pass it on to every branch that has a
		// connection, then the flow is over.
		if p.HeaderLen() > p.IPHeaderLen()+20 {
			p.NopOptions(packet.OptSACK, packet.OptTimestamps)
		}
		f.fanOut(buf, p, false, out)
		f.finish(CauseRST, out)
		return
	case f.state == StateSynSent:
		f.stats.Invalid++ // the client cannot have our SYN-ACK yet
		return
	case fl&packet.FlagACK == 0:
		f.stats.Invalid++
		return
	}
	seq := seqnum.Value(p.Seq())
	if end := seq.Add(seqnum.Size(p.SeqLen())); f.cliNxt.LessThan(end) {
		f.cliNxt = end
	}
	if fl&packet.FlagFIN != 0 && !f.cliFin {
		f.cliFin, f.cliFinAt = true, seq.Add(seqnum.Size(p.PayloadLen()))
	}
	if a := seqnum.Value(p.Ack()); f.cliAcked.LessThan(a) && a.LessThanEq(f.sndNxt) {
		f.cliAcked = a
	}
	f.cliWnd = p.Window()
	if p.HeaderLen() > p.IPHeaderLen()+20 {
		if _, err := p.NopOptions(packet.OptSACK, packet.OptTimestamps); err != nil {
			f.stats.Invalid++
			return
		}
	}
	if sl := p.SeqLen(); sl > 0 && seq.Add(seqnum.Size(sl)).LessThanEq(f.sentAck) {
		// A retransmission of bytes we acknowledged: our ACK was lost.
		// Repeat it at once, as a receiver does for an old segment.
		f.sentAck, f.sentEdge = f.minAck, f.minEdge
		f.build(out, ToClient, f.vip, f.client, uint32(f.sndNxt), uint32(f.minAck),
			packet.FlagACK, f.clientWindow(), nil)
	}
	f.fanOut(buf, p, false, out)
	f.checkClosed(now)
}

// fanOut copies the client segment p to every live branch (only those that
// answered, unless syn), rewriting each copy; the last copy reuses buf.
func (f *Flow) fanOut(buf []byte, p *packet.TCP, syn bool, out *Out) {
	last := -1
	for k := range f.br {
		if b := &f.br[k]; !b.removed && (syn || b.answered) {
			last = k
		}
	}
	if last < 0 {
		return
	}
	off := out.Offset
	src := buf[off-virtio.HdrLen : off+len(p.Buf)]
	for k := 0; k < last; k++ {
		b := &f.br[k]
		if b.removed || !(syn || b.answered) {
			continue
		}
		n := off + len(p.Buf)
		var dst []byte
		if out.Alloc != nil {
			dst = out.Alloc(n)
		}
		if len(dst) < n {
			f.stats.AllocFail++
			continue
		}
		dst = dst[:n]
		copy(dst[off-virtio.HdrLen:], src)
		var q packet.TCP
		if q.Parse(dst[off:], virtio.Hdr(dst[off-virtio.HdrLen:off])) != nil {
			f.stats.Invalid++
			continue
		}
		f.toBranch(&q, b, syn)
		out.Pkts = append(out.Pkts, Emit{To: k, Buf: dst})
		f.stats.ToBranches++
	}
	f.toBranch(p, &f.br[last], syn)
	out.Pkts = append(out.Pkts, Emit{To: last, Buf: buf[:off+len(p.Buf)], InPlace: true})
	f.stats.ToBranches++
}

// toBranch rewrites a client segment for branch b: destination, the ack
// into b's sequence space, and the window into b's view of the client's
// scale.
func (f *Flow) toBranch(q *packet.TCP, b *branch, syn bool) {
	q.SetDstAddr(b.t.Addr.Addr())
	q.SetDstPort(b.t.Addr.Port())
	if syn {
		if lim := b.t.mssLimit(); lim > 0 {
			if o, err := q.SynOptions(); err == nil && o.MSS > lim {
				q.SetMSS(lim)
			}
		}
		return
	}
	if q.Has(packet.FlagACK) {
		q.SetAck(q.Ack() + uint32(b.off))
	}
	if f.cliWSOK && !b.wsOK && f.cliWS > 0 {
		q.SetWindow(f.branchWindow(b, q.Window()))
	}
}

// branchWindow translates a client window field into branch b's view: the
// client scales its window by cliWS; a branch that did not agree to scaling
// reads the field as bytes.
func (f *Flow) branchWindow(b *branch, raw uint16) uint16 {
	if f.cliWSOK && !b.wsOK && f.cliWS > 0 {
		return uint16(min(uint32(raw)<<f.cliWS, 0xffff))
	}
	return raw
}
