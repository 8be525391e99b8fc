package middlebox

import "github.com/sdnkvs/sdnkvs/netstackio/packet"

// Anycast flows: each connection goes to one node of the most preferred
// live DC. The middlebox rewrites addresses only (DNAT towards the node,
// SNAT back to the VIP), follows the close and forgets the flow after it.

// anycastFromClient rewrites a client packet of anycast flow i towards
// its node (under flows); reset (an acceptable RST) removes the flow.
func (m *Middlebox) anycastFromClient(i int32, p *packet.TCP, reset bool) (int, verdict) {
	f := &m.flows.tab.slab[i]
	if f.state == stSynRecv && p.Flags()&(packet.FlagSYN|packet.FlagRST) == 0 && p.Flags()&packet.FlagACK != 0 {
		m.establish(i) // the client acknowledged the node's SYN-ACK
	}
	m.trackClose(f, p, true)
	n := m.nodes[f.nodes[0]]
	p.SetDstAddr(n.ap.Addr())
	p.SetDstPort(n.key.port)
	if reset {
		m.removeFlow(i)
		m.c.flowsReset.Add(1)
	}
	return 0, verdictForward
}

// anycastFromNode rewrites a node's packet of anycast flow i as coming
// from the VIP (under flows).
func (m *Middlebox) anycastFromNode(i int32, p *packet.TCP) (int, verdict) {
	f := &m.flows.tab.slab[i]
	m.trackClose(f, p, false)
	p.SetSrcAddr(m.cfg.VIP)
	p.SetSrcPort(f.key.vport)
	if p.Flags()&packet.FlagRST != 0 {
		m.removeFlow(i)
		m.c.flowsReset.Add(1)
	}
	return 0, verdictForward
}

// trackClose follows FINs and their acknowledgements: once both FINs are
// acknowledged, the flow lingers for FinLinger (late retransmits) and is
// then removed.
func (m *Middlebox) trackClose(f *flow, p *packet.TCP, client bool) {
	fl := p.Flags()
	if fl&packet.FlagFIN != 0 {
		fin := p.Seq() + uint32(p.PayloadLen())
		if client {
			f.finCli, f.finCliSeq = true, fin
		} else {
			f.finSrv, f.finSrvSeq = true, fin
		}
	}
	if fl&packet.FlagACK != 0 {
		ack := p.Ack()
		if client && f.finSrv && int32(ack-(f.finSrvSeq+1)) >= 0 {
			f.finSrvAcked = true
		}
		if !client && f.finCli && int32(ack-(f.finCliSeq+1)) >= 0 {
			f.finCliAcked = true
		}
	}
	if f.finCliAcked && f.finSrvAcked && f.state != stClosing {
		f.state = stClosing
		f.linger = m.dp.nowUnix + int64(m.cfg.FinLinger)
	}
}

// pickNode chooses a live node of DC d by hash h.
func (m *Middlebox) pickNode(d int, h uint32) (uint16, bool) {
	idx := m.dcNode[d]
	live := 0
	for _, ni := range idx {
		if m.nodes[ni].live.Load() {
			live++
		}
	}
	if live == 0 {
		return 0, false
	}
	want := int(h % uint32(live))
	for _, ni := range idx {
		if m.nodes[ni].live.Load() {
			if want == 0 {
				return ni, true
			}
			want--
		}
	}
	return 0, false
}
