package middlebox

import (
	"net/netip"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// RSTs the middlebox makes itself: to a SYN it cannot serve (table full,
// no live node), and to anycast clients whose node was declared dead.

// rstToClient turns the client's SYN in m.dp.pkt into a RST+ACK from the
// VIP back to the client, in place (RFC 793: seq 0, ack = SYN's seq + len).
func (m *Middlebox) rstToClient(p *packet.TCP) (int, verdict) {
	cli, cport, vport := p.SrcAddr4(), p.SrcPort(), p.DstPort()
	ack := p.Seq() + uint32(p.SeqLen())
	rst := packet.Fields{Src: addrPort4(m.vip, vport), Dst: addrPort4(cli, cport), Ack: ack, Flags: packet.FlagRST | packet.FlagACK}
	if err := p.Build(p.Buf, p.Vnet, &rst); err != nil {
		return 0, verdictDrop
	}
	m.c.rstSent.Add(1)
	return 0, verdictForward
}

// rstBufs is how many RSTs one timer pass sends at most; more wait for
// the next pass (which is scheduled at once).
const rstBufs = 1024

// resetDeadAnycast sends every anycast flow on a dead node a RST towards
// its client (which the client accepts: seq = its last acknowledgement, or
// an ACK of its SYN) and removes the flow. Under timers and flows, by the
// timer goroutine; the RSTs go to m.timers.outs.
func (m *Middlebox) resetDeadAnycast() {
	if !m.resetPending.Swap(false) {
		return
	}
	tm := &m.timers
	t := m.flows.tab
	for i := range t.slab {
		f := &t.slab[i]
		if !f.used || f.kind != kindAnycast || m.nodes[f.nodes[0]].live.Load() {
			continue
		}
		if len(tm.rstPool) == 0 {
			m.wakeReset() // continue in the next pass
			return
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
