package middlebox

import (
	"encoding/binary"

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
	b := p.Buf[:40]
	writeTCPHeader(b, m.vip, cli, vport, cport, 0, ack, packet.FlagRST|packet.FlagACK)
	vnet := p.Vnet
	vnet.Clear()
	if err := p.Parse(b, vnet); err != nil {
		return 0, verdictDrop
	}
	p.ComputeIPChecksum()
	p.ComputeTCPChecksum()
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
	off := m.offset
	vnet := virtio.At(b, off)
	vnet.Clear()
	pkt := b[off : off+40]
	writeTCPHeader(pkt, m.vip, k.cli, k.vport, k.cport, seq, ack, flags)
	var p packet.TCP
	if p.Parse(pkt, vnet) == nil {
		p.ComputeIPChecksum()
		p.ComputeTCPChecksum()
	}
	return b[:off+40]
}

// writeTCPHeader writes a 20-byte IPv4 and a 20-byte TCP header (no
// options, zero window and checksums) into b[:40].
func writeTCPHeader(b []byte, src, dst [4]byte, sport, dport uint16, seq, ack uint32, flags uint8) {
	clear(b[:40])
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], 40)
	b[8] = 64
	b[9] = packet.ProtoTCP
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = flags
}
