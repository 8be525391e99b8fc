package middlebox

import (
	"net/netip"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// RSTs the middlebox makes itself: to a SYN it cannot serve (table full,
// no live node), and to anycast clients whose node was declared dead.

// rstToClient turns the client's SYN in m.dp.pkt into a RST+ACK from the
// VIP back to the client, in place (RFC 793: seq 0, ack = SYN's seq + len).
func (m *Middlebox) rstToClient(p *packet.TCP) (int, verdict) {
	return m.rstInPlace(p, 0, p.Seq()+uint32(p.SeqLen()), packet.FlagRST|packet.FlagACK)
}

// rstUnknown answers the client's packet in m.dp.pkt, of a connection the
// middlebox does not know, with the RST RFC 793 prescribes, in place: seq
// = its ack if it has one, else seq 0 and an ack of it.
func (m *Middlebox) rstUnknown(p *packet.TCP) (int, verdict) {
	if p.Flags()&packet.FlagACK != 0 {
		return m.rstInPlace(p, p.Ack(), 0, packet.FlagRST)
	}
	return m.rstToClient(p)
}

// rstInPlace rewrites the client's packet in m.dp.pkt into a RST from the
// VIP back to the client.
func (m *Middlebox) rstInPlace(p *packet.TCP, seq, ack uint32, flags uint8) (int, verdict) {
	cli, cport, vport := p.SrcAddr4(), p.SrcPort(), p.DstPort()
	rst := packet.Fields{Src: addrPort4(m.vip, vport), Dst: addrPort4(cli, cport), Seq: seq, Ack: ack, Flags: flags}
	if err := p.Build(p.Buf, p.Vnet, &rst); err != nil {
		return 0, verdictDrop
	}
	m.c.rstSent.Add(1)
	return 0, verdictForward
}

// rstBufs is how many failover RSTs are made before they are written.
const rstBufs = 1024

// applyDeadNodes acts on nodes just declared dead, at once rather than at
// the next tick: every anycast flow on a dead node gets a RST towards its
// client (which the client accepts: seq = its last acknowledgement, or an
// ACK of its SYN) and is removed, and every forked flow loses its branches
// on dead nodes (so the survivors' bytes the dead branch held back reach
// the client now: ackmerge's held bytes). Under timers and flows, by the
// timer goroutine; the packets go to m.timers.outs.
func (m *Middlebox) applyDeadNodes(now time.Time) {
	if !m.resetPending.Swap(false) {
		return
	}
	tm := &m.timers
	t := m.flows.tab
	for i := range t.slab {
		f := &t.slab[i]
		if f.used && f.kind == kindForked {
			if len(tm.pool.free) < m.timers.reserve {
				m.flushTimerOutput()
			}
			m.dropDeadBranches(int32(i), now)
			continue
		}
		if n := m.nodes[f.nodes[0]]; !f.used || f.kind != kindAnycast || n.live.Load() && m.lifeAnycastOK(n.dc) {
			continue // (a DC that is no longer current must not serve reads either)
		}
		if len(tm.rstPool) == 0 {
			m.flushTimerOutput() // write these, reuse their buffers
		}
		b := tm.rstPool[len(tm.rstPool)-1]
		tm.rstPool = tm.rstPool[:len(tm.rstPool)-1]
		tm.rstInUse = append(tm.rstInUse, b)
		var pkt []byte
		if f.haveCliAck {
			pkt = m.buildRST(b, f.key, f.cliAck, 0, packet.FlagRST)
		} else {
			pkt = m.buildRST(b, f.key, 0, f.cliISS+1, packet.FlagRST|packet.FlagACK)
		}
		tm.outs = append(tm.outs, pkt)
		m.c.rstSent.Add(1)
		m.c.failoverRSTs.Add(1)
		m.removeFlow(int32(i))
		m.c.flowsReset.Add(1)
	}
}

// buildRST writes, in b at m.offset, a RST from VIP:k.vport to the client
// of k with a zero virtio-net header and complete checksums, and returns
// the buffer cut to the packet's end.
func (m *Middlebox) buildRST(b []byte, k fwdKey, seq, ack uint32, flags uint8) []byte {
	rst := packet.Fields{Src: addrPort4(m.vip, k.vport), Dst: addrPort4(k.cli, k.cport), Seq: seq, Ack: ack, Flags: flags}
	var p packet.TCP
	p.Build(b[m.offset:], virtio.At(b, m.offset), &rst) // cannot fail: b holds a packet header
	return b[:m.offset+rst.Len()]
}

func addrPort4(a [4]byte, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4(a), port)
}
