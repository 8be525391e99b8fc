package middlebox

import (
	"encoding/binary"
	"fmt"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Drop reasons, the `reason` label of sdnkvs_middlebox_drops_total.
type Reason int

const (
	ReasonTruncated            Reason = iota // shorter than its headers say
	ReasonNotIP                              // IP version neither 4 nor 6
	ReasonIPv6                               // IPv6 (not supported)
	ReasonBadIPHeader                        // IPv4 header length/total length wrong
	ReasonBadIPChecksum                      // IPv4 header checksum wrong
	ReasonFragment                           // IPv4 fragment
	ReasonBadTCPHeader                       // TCP header (data offset) wrong
	ReasonBadTCPChecksum                     // TCP checksum wrong
	ReasonNotForVIP                          // neither to the VIP nor from a node's service port
	ReasonUnknownFlow                        // non-SYN for a flow not in the table
	ReasonTableFull                          // SYN while the table is full (a RST is sent back)
	ReasonNoLiveNode                         // SYN while no DC has a live node (a RST is sent back)
	ReasonMulticastUnavailable               // (unused: multicast ports are always served)
	ReasonReverseCollision                   // SYN whose reply key is taken by another flow
	ReasonForkRefused                        // ackmerge refused to create the flow
	ReasonStackRefused                       // the local Stack refused the packet
	ReasonWriteFailed                        // the Device did not accept the packet
	ReasonNoBuffer                           // no free buffer for an extra packet
	ReasonNotSequenced                       // sequenced client segment that could not be stamped
	ReasonHalfOpenQuota                      // SYN from a source with MaxHalfOpenPerSource half-open flows
	ReasonSpoofedNode                        // to the VIP from a node's address (forged, from the client side)
	ReasonRSTOutOfWindow                     // client RST behind the node's acknowledgement, or not exact on a forked flow (RFC 5961)
	ReasonNoCurrentDC                        // SYN while no DC is live (current), only joining or down ones (a RST is sent back)
	ReasonFlowQuota                          // SYN from a source holding MaxFlowsPerSource flows (a RST is sent back)
	numReasons
)

var reasonNames = [numReasons]string{
	"truncated", "not_ip", "ipv6", "bad_ip_header", "bad_ip_checksum", "fragment",
	"bad_tcp_header", "bad_tcp_checksum", "not_for_vip", "unknown_flow", "table_full",
	"no_live_node", "multicast_unavailable", "reverse_collision", "fork_refused",
	"stack_refused", "write_failed", "no_buffer", "not_sequenced",
	"half_open_quota", "spoofed_node", "rst_out_of_window", "no_current_dc",
	"flow_quota",
}

func (r Reason) String() string {
	if r >= 0 && r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Port kinds.
const (
	portNone uint8 = iota
	portAnycast
	portMulticast
)

type verdict uint8

const (
	verdictDrop verdict = iota
	verdictForward
	verdictLocal
	verdictConsumed // a forked flow took it; its output is in m.dp.outs
)

// process classifies and rewrites the packet in buf[m.offset:m.offset+size]
// (under flows). On verdictForward m.dp.pkt views the packet to write and
// shift says how far its start moved (payload trims).
func (m *Middlebox) process(buf []byte, size int) (shift int, v verdict) {
	off := m.offset
	b := buf[off : off+size]
	vnet := virtio.At(buf, off)
	if len(b) < 1 {
		m.drop(ReasonTruncated)
		return 0, verdictDrop
	}
	switch b[0] >> 4 {
	case 4:
	case 6:
		m.drop(ReasonIPv6)
		return 0, verdictDrop
	default:
		m.drop(ReasonNotIP)
		return 0, verdictDrop
	}
	if len(b) < 20 {
		m.drop(ReasonTruncated)
		return 0, verdictDrop
	}
	ihl := int(b[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || tot < ihl {
		m.drop(ReasonBadIPHeader)
		return 0, verdictDrop
	}
	if ihl > len(b) || tot > len(b) {
		m.drop(ReasonTruncated)
		return 0, verdictDrop
	}
	if checksum.Checksum(b[:ihl], 0) != 0xffff {
		m.drop(ReasonBadIPChecksum)
		return 0, verdictDrop
	}
	if binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		m.drop(ReasonFragment)
		return 0, verdictDrop
	}
	b = b[:tot]
	dst := [4]byte(b[16:20])
	toVIP := dst == m.vip
	if b[9] != packet.ProtoTCP {
		if toVIP {
			return 0, verdictLocal
		}
		m.drop(ReasonNotForVIP)
		return 0, verdictDrop
	}
	p := &m.dp.pkt
	if err := p.Parse(b, vnet); err != nil {
		switch err {
		case packet.ErrTruncated:
			m.drop(ReasonTruncated)
		default:
			m.drop(ReasonBadTCPHeader)
		}
		return 0, verdictDrop
	}
	if vnet.Flags()&(virtio.FlagNeedsCsum|virtio.FlagDataValid) == 0 && !p.ChecksumsValid() {
		m.drop(ReasonBadTCPChecksum)
		return 0, verdictDrop
	}
	if toVIP {
		if m.nodeAddr[[4]byte(b[12:16])] {
			m.drop(ReasonSpoofedNode)
			return 0, verdictDrop
		}
		switch m.ports[p.DstPort()] {
		case portAnycast, portMulticast:
			return m.fromClient(p, buf)
		}
		return 0, verdictLocal
	}
	ni, ok := m.byNode[nodeKey{p.SrcAddr4(), p.SrcPort()}]
	if !ok {
		m.drop(ReasonNotForVIP)
		return 0, verdictDrop
	}
	return m.fromNode(p, ni, buf)
}

// fromClient handles a packet from a client to a service port of the VIP
// (under flows): it finds or creates the flow and hands the packet to the
// flow's kind.
func (m *Middlebox) fromClient(p *packet.TCP, buf []byte) (int, verdict) {
	t := m.flows.tab
	k := fwdKey{cli: p.SrcAddr4(), cport: p.SrcPort(), vport: p.DstPort()}
	fl := p.Flags()
	syn := fl&(packet.FlagSYN|packet.FlagACK) == packet.FlagSYN
	i, ok := t.fwd[k]
	if ok && syn {
		f := &t.slab[i]
		if f.state == stClosing || f.finCli || f.finSrv {
			// Port reuse after a close: start afresh.
			m.removeFlow(i)
			ok = false
		}
	}
	if !ok {
		var v verdict
		if i, v = m.unknownFromClient(k, p); i < 0 {
			return 0, v
		}
	}
	reset := false
	if fl&packet.FlagRST != 0 {
		var pass bool
		if pass, reset = m.rstVerdict(i, p); !pass {
			return 0, verdictDrop
		}
	}
	if m.flows.det != nil {
		m.observeClient(i, p)
	}
	f := &t.slab[i]
	f.last = m.dp.nowUnix
	f.pktsIn++
	f.bytesIn += uint64(len(p.Buf))
	if fl&packet.FlagACK != 0 {
		if a := p.Ack(); !f.haveCliAck || int32(a-f.cliAck) > 0 {
			f.cliAck, f.haveCliAck = a, true
		}
	}
	if f.kind == kindForked {
		if m.seq != nil && !m.seqStamp(i, p, m.dp.nowUnix) {
			m.drop(ReasonNotSequenced)
			return 0, verdictDrop
		}
		m.stepFork(i, buf, p, ackmerge.ToClient)
		return 0, verdictConsumed
	}
	return m.anycastFromClient(i, p, reset)
}

// fromNode handles a packet from node ni's service port (under flows).
func (m *Middlebox) fromNode(p *packet.TCP, ni uint16, buf []byte) (int, verdict) {
	t := m.flows.tab
	n := m.nodes[ni]
	rk := revKey{node: n.key.addr, cli: p.DstAddr4(), nport: n.key.port, cport: p.DstPort()}
	i, ok := t.rev[rk]
	if !ok {
		m.drop(ReasonUnknownFlow)
		return 0, verdictDrop
	}
	f := &t.slab[i]
	f.last = m.dp.nowUnix
	f.pktsOut++
	f.bytesOut += uint64(len(p.Buf))
	fl := p.Flags()
	if f.kind == kindAnycast {
		switch {
		case fl&(packet.FlagSYN|packet.FlagACK) == packet.FlagSYN|packet.FlagACK && f.state == stSynSent:
			f.state = stSynRecv // established only when the client acknowledges it
		case fl&packet.FlagRST == 0 && f.state == stAdopted:
			m.establish(i) // the node knows the connection
		}
		if fl&packet.FlagACK != 0 {
			if a := p.Ack(); !f.haveSrvAck || int32(a-f.srvAck) > 0 {
				f.srvAck, f.haveSrvAck = a, true
			}
		}
	}
	br := 0
	for j := 0; j < int(f.nbranch); j++ {
		if f.nodes[j] == ni {
			br = j
		}
	}
	if m.flows.det != nil {
		m.observeServer(i, br, p)
	}
	if f.kind == kindForked {
		m.stepFork(i, buf, p, br)
		return 0, verdictConsumed
	}
	return m.anycastFromNode(i, p)
}

// unknownFromClient handles a client packet of no flow (under flows): a
// SYN creates a half-open flow; on an anycast port any other packet but a
// RST re-adopts the flow (after a restart, or an eviction) from the
// deterministic node choice, half-open until the node answers; on a
// forked port it gets a RST (the forked connection cannot be resumed).
// It returns the flow, or -1 and the verdict for the packet.
func (m *Middlebox) unknownFromClient(k fwdKey, p *packet.TCP) (int32, verdict) {
	fl := p.Flags()
	syn := fl&(packet.FlagSYN|packet.FlagACK) == packet.FlagSYN
	var i int32
	var r Reason
	switch {
	case fl&packet.FlagRST != 0, syn && fl&packet.FlagFIN != 0, !syn && fl&packet.FlagACK == 0:
		m.drop(ReasonUnknownFlow)
		return -1, verdictDrop
	case syn:
		i, r = m.newFlow(k, p.Seq(), stSynSent)
	case m.ports[k.vport] == portAnycast:
		i, r = m.newFlow(k, p.Seq()-1, stAdopted)
		if i >= 0 {
			m.c.flowsAdopted.Add(1)
		}
	default:
		m.drop(ReasonUnknownFlow)
		_, v := m.rstUnknown(p)
		return -1, v
	}
	if i >= 0 {
		return i, verdictForward
	}
	if !syn && r != ReasonHalfOpenQuota {
		r = ReasonUnknownFlow // not adopted: it stays unknown
	}
	m.drop(r)
	if syn && (r == ReasonTableFull || r == ReasonNoLiveNode || r == ReasonNoCurrentDC || r == ReasonFlowQuota) {
		_, v := m.rstToClient(p)
		return -1, v
	}
	return -1, verdictDrop
}

// rstVerdict applies RFC 5961 to a client RST on flow i (under flows):
// pass says whether to pass it on, reset whether it ends the flow.
// A RST is acted on only at exactly the node's rcv.nxt (the last
// acknowledgement seen from it; the SYN's next sequence number before
// any). On an anycast flow a RST ahead of it is passed to the node
// without removing the flow: the node's stack answers with a challenge
// ACK, to which a client that did reset answers with an exact RST. A RST
// behind it, and any inexact RST on a forked flow, is dropped and counted.
func (m *Middlebox) rstVerdict(i int32, p *packet.TCP) (pass, reset bool) {
	f := &m.flows.tab.slab[i]
	want, known := f.cliISS+1, f.state != stAdopted
	switch {
	case f.kind == kindForked:
		cb, _ := f.fork.Acked()
		want += cb
	case f.haveSrvAck:
		want, known = f.srvAck, true
	}
	seq := p.Seq()
	switch {
	case known && seq == want:
		return true, true
	case f.kind == kindAnycast && (!known || int32(seq-want) > 0):
		m.c.rstPassed.Add(1)
		return true, false
	}
	m.drop(ReasonRSTOutOfWindow)
	return false, false
}
