package middlebox

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// ProbeKind selects the failure detector's active probes.
type ProbeKind uint8

const (
	ProbeNone  ProbeKind = iota // passive signals only
	ProbeReady                  // HTTP GET http://<node-ip>:<ReadyPort>/ready (200 = ready)
	ProbeTCP                    // TCP connect to <node-ip>:<ProbePort>
)

// FailoverConfig turns on the failure detector (package failover): the
// data path reports client and server segments, probes report node
// health, and its decisions are applied at once:
//
//   - NodeDown: the node leaves its DC's live set (new flows avoid it and,
//     with no live node left, the DC); every anycast flow on it gets a RST
//     towards the client that the client accepts (sequence = the client's
//     last acknowledgement), so the client reconnects to the VIP and lands
//     on the next DC; forked flows drop its branch (without a reset, unless
//     fewer than Fork.MinReplicas remain) at the next timer tick.
//   - NodeUp: the node is used again, for new flows only.
//
// Probes must not target the nodes' service port: with the gateway's
// policy routing, replies from that port go into the TUN. Use the
// readiness endpoint (ProbeReady, port 8379 of kvs nodes) or another port.
type FailoverConfig struct {
	Detector  failover.Config
	Probe     ProbeKind
	ReadyPort uint16 // ProbeReady: default 8379
	ProbePort uint16 // ProbeTCP: required
	Prober    prober.Config
}

// detKey is the detector's flow key: one per branch of a flow.
type detKey struct {
	k  fwdKey
	br uint8
}

func (m *Middlebox) startFailover() error {
	fc := m.cfg.Failover
	topo := make([]failover.DC, len(m.dcs))
	for i, dc := range m.dcs {
		topo[i] = failover.DC{Name: dc.Name, Nodes: dc.Nodes}
	}
	d, err := failover.New[detKey](fc.Detector, topo)
	if err != nil {
		return err
	}
	m.det = d
	if fc.Probe == ProbeNone {
		return nil
	}
	var targets []prober.Target
	for i, n := range m.nodes {
		ip := n.ap.Addr().String()
		t := prober.Target{Node: failover.NodeID(i)}
		switch fc.Probe {
		case ProbeReady:
			port := fc.ReadyPort
			if port == 0 {
				port = 8379
			}
			t.Kind, t.Addr = prober.HTTP, "http://"+net.JoinHostPort(ip, fmt.Sprint(port))+"/ready"
		case ProbeTCP:
			if fc.ProbePort == 0 {
				return fmt.Errorf("middlebox: TCP probes need a probe port")
			}
			t.Kind, t.Addr = prober.TCP, net.JoinHostPort(ip, fmt.Sprint(fc.ProbePort))
		default:
			return fmt.Errorf("middlebox: unknown probe kind %d", fc.Probe)
		}
		targets = append(targets, t)
	}
	p, err := prober.New(fc.Prober, targets, m.probeReport)
	if err != nil {
		return err
	}
	m.prober = p
	return nil
}

// probeReport queues a probe result for the timer goroutine.
func (m *Middlebox) probeReport(r prober.Result) {
	m.probeMu.Lock()
	if len(m.probes) < 4096 {
		m.probes = append(m.probes, r)
	} else {
		m.c.probesLost.Add(1)
	}
	m.probeMu.Unlock()
	select {
	case m.probeWake <- struct{}{}:
	default:
	}
}

// segOf describes p for the detector.
func segOf(p *packet.TCP) failover.Segment {
	return failover.Segment{Seq: seqnum.Value(p.Seq()), Ack: seqnum.Value(p.Ack()), Len: p.PayloadLen(), Flags: header.TCPFlags(p.Flags())}
}

// observeClient reports a client segment of flow i (before any rewrite).
func (m *Middlebox) observeClient(i int32, p *packet.TCP) {
	f := &m.tab.slab[i]
	seg := segOf(p)
	for j := 0; j < int(f.nbranch); j++ {
		if f.gone&(1<<j) != 0 {
			continue
		}
		if decs := m.det.ClientSegment(m.nowTime, detKey{f.key, uint8(j)}, failover.NodeID(f.nodes[j]), seg); len(decs) > 0 {
			m.apply(decs)
		}
	}
}

// observeServer reports a segment from branch br of flow i.
func (m *Middlebox) observeServer(i int32, br int, p *packet.TCP) {
	f := &m.tab.slab[i]
	if decs := m.det.ServerSegment(m.nowTime, detKey{f.key, uint8(br)}, failover.NodeID(f.nodes[br]), segOf(p)); len(decs) > 0 {
		m.apply(decs)
	}
}

// detectorTimers feeds queued probe results and runs the detector's
// timers; called under mu by the timer goroutine, with its buffers.
func (m *Middlebox) detectorTimers(now time.Time) {
	m.probeMu.Lock()
	m.probesWork, m.probes = m.probes, m.probesWork[:0]
	m.probeMu.Unlock()
	for _, r := range m.probesWork {
		if decs := m.det.Probe(r.At, r.Node, r.ProbeResult); len(decs) > 0 {
			m.apply(decs)
		}
	}
	if decs := m.det.Tick(now); len(decs) > 0 {
		m.apply(decs)
	}
}

// apply carries out detector decisions (under mu): liveness now, RSTs of
// anycast flows on dead nodes by the timer goroutine (woken at once).
func (m *Middlebox) apply(decs []failover.Decision) {
	for _, d := range decs {
		switch d.Kind {
		case failover.NodeDown, failover.NodeUp:
			if d.Node < 0 || int(d.Node) >= len(m.nodes) {
				continue
			}
			n := m.nodes[d.Node]
			up := d.Kind == failover.NodeUp
			n.live.Store(up)
			m.log.Warn("failover decision", "decision", d.Kind.String(), "node", n.ap, "dc", m.dcs[n.dc].Name, "signal", d.Signal.String(), "cause", d.Cause)
			if up {
				m.c.nodeUps.Add(1)
			} else {
				m.c.nodeDowns.Add(1)
				m.wakeReset()
			}
		case failover.DCDown, failover.DCUp:
			name := "?"
			if d.DC >= 0 && int(d.DC) < len(m.dcs) {
				name = m.dcs[d.DC].Name
			}
			m.log.Warn("failover decision", "decision", d.Kind.String(), "dc", name, "signal", d.Signal.String(), "cause", d.Cause)
		}
	}
}

// wakeReset asks the timer goroutine to reset anycast flows on dead nodes.
func (m *Middlebox) wakeReset() {
	m.resetPending.Store(true)
	select {
	case m.probeWake <- struct{}{}:
	default:
	}
}

// rstBufs is how many RSTs one timer pass sends at most; more wait for
// the next pass (which is scheduled at once).
const rstBufs = 1024

// resetDeadAnycast sends every anycast flow on a dead node a RST towards
// its client (which the client accepts: seq = its last acknowledgement, or
// an ACK of its SYN) and removes the flow. Under mu, by the timer
// goroutine; the RSTs go to m.touts.
func (m *Middlebox) resetDeadAnycast() {
	if !m.resetPending.Swap(false) {
		return
	}
	for i := range m.tab.slab {
		f := &m.tab.slab[i]
		if !f.used || f.kind != kindAnycast || m.nodes[f.nodes[0]].live.Load() {
			continue
		}
		if len(m.rstPool) == 0 {
			m.wakeReset() // continue in the next pass
			return
		}
		b := m.rstPool[len(m.rstPool)-1]
		m.rstPool = m.rstPool[:len(m.rstPool)-1]
		m.rstInUse = append(m.rstInUse, b)
		var pkt []byte
		if f.haveCliAck {
			pkt = m.buildRST(b, f.key, f.cliAck, 0, packet.FlagRST)
		} else {
			pkt = m.buildRST(b, f.key, 0, f.cliISS+1, packet.FlagRST|packet.FlagACK)
		}
		m.touts = append(m.touts, pkt)
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

// failoverNodeLocked returns the detector's view of node ni (false
// without a detector). It takes mu.
func (m *Middlebox) failoverNodeLocked(ni int) (failover.NodeStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.det == nil {
		return failover.NodeStatus{}, false
	}
	return m.det.NodeState(failover.NodeID(ni))
}
