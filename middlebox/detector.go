package middlebox

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
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
// readiness endpoint (prober.HTTP on prober.ReadyPort, the default) or
// another port.
type FailoverConfig struct {
	Detector failover.Config
	// Probe is how each node is probed (prober.None: passive signals only).
	Probe prober.Kind
	// ProbePort is the port probed on each node's address (default
	// prober.ReadyPort); never a node's service port.
	ProbePort uint16
	Prober    prober.Config
}

// validate checks fc (defaults filled) against the topology.
func (fc *FailoverConfig) validate(dcs []failover.DC) error {
	if err := fc.Detector.Validate(); err != nil {
		return &ConfigError{Field: "Failover.Detector", Err: err}
	}
	switch fc.Probe {
	case prober.None:
		return nil
	case prober.TCP, prober.HTTP:
	default:
		return fieldErr("Failover.Probe", "unknown probe kind %d", fc.Probe)
	}
	for _, dc := range dcs {
		for _, n := range dc.Nodes {
			if n.Port() == fc.ProbePort {
				return fieldErr("Failover.ProbePort", "%d is node %s's service port, whose replies go into the TUN", fc.ProbePort, n)
			}
		}
	}
	if err := fc.Prober.Validate(); err != nil {
		return &ConfigError{Field: "Failover.Prober", Err: err}
	}
	if fc.Prober.Interval != 0 && fc.Prober.Interval < MinProbeInterval {
		return fieldErr("Failover.Prober.Interval", "%v is below %v", fc.Prober.Interval, MinProbeInterval)
	}
	return nil
}

// detKey is the detector's flow key: one per branch of a flow.
type detKey struct {
	k  fwdKey
	br uint8
}

func (m *Middlebox) startFailover() error {
	fc := m.cfg.Failover
	d, err := failover.New[detKey](fc.Detector, m.dcs)
	if err != nil {
		return err
	}
	m.flows.det = d
	if fc.Probe == prober.None {
		return nil
	}
	targets := make([]prober.Target, len(m.nodes))
	for i, n := range m.nodes {
		ip := n.ap.Addr().String()
		targets[i] = prober.Target{Node: failover.NodeID(i), Kind: fc.Probe, Addr: net.JoinHostPort(ip, strconv.Itoa(int(fc.ProbePort)))}
		if fc.Probe == prober.HTTP {
			targets[i].Addr = prober.ReadyURL(ip, fc.ProbePort)
		}
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
	m.probes.Lock()
	if len(m.probes.queue) < 4096 {
		m.probes.queue = append(m.probes.queue, r)
	} else {
		m.c.probesLost.Add(1)
	}
	m.probes.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// segOf describes p for the detector.
func segOf(p *packet.TCP) failover.Segment {
	return failover.Segment{Seq: seqnum.Value(p.Seq()), Ack: seqnum.Value(p.Ack()), Len: p.PayloadLen(), Flags: header.TCPFlags(p.Flags())}
}

// clientSegOf describes client packet p for the detector, with the
// client's address (Safe mode's corroboration counts distinct clients).
func clientSegOf(p *packet.TCP) failover.Segment {
	s := segOf(p)
	s.Client = netip.AddrFrom4(p.SrcAddr4())
	return s
}

// observeClient reports a client segment of flow i (before any rewrite).
func (m *Middlebox) observeClient(i int32, p *packet.TCP) {
	f := &m.flows.tab.slab[i]
	seg := clientSegOf(p)
	for j := 0; j < int(f.nbranch); j++ {
		if f.gone&(1<<j) != 0 {
			continue
		}
		if decs := m.flows.det.ClientSegment(m.dp.nowTime, detKey{f.key, uint8(j)}, failover.NodeID(f.nodes[j]), seg); len(decs) > 0 {
			m.apply(decs)
		}
	}
}

// observeServer reports a segment from branch br of flow i.
func (m *Middlebox) observeServer(i int32, br int, p *packet.TCP) {
	f := &m.flows.tab.slab[i]
	if decs := m.flows.det.ServerSegment(m.dp.nowTime, detKey{f.key, uint8(br)}, failover.NodeID(f.nodes[br]), segOf(p)); len(decs) > 0 {
		m.apply(decs)
	}
}

// detectorTimers feeds queued probe results and runs the detector's
// timers; called under timers and flows by the timer goroutine.
func (m *Middlebox) detectorTimers(now time.Time) {
	m.probes.Lock()
	m.timers.probeWork, m.probes.queue = m.probes.queue, m.timers.probeWork[:0]
	m.probes.Unlock()
	for _, r := range m.timers.probeWork {
		if decs := m.flows.det.Probe(r.At, r.Node, r.ProbeResult); len(decs) > 0 {
			m.apply(decs)
		}
	}
	if decs := m.flows.det.Tick(now); len(decs) > 0 {
		m.apply(decs)
	}
}

// apply carries out detector decisions (under flows): liveness now, RSTs of
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
	if m.life != nil && len(decs) > 0 {
		m.syncReach(m.cfg.Now())
	}
}

// reportLag tells the detector which branches of forked flow i lag the
// others' acknowledgement, and since when (ackmerge's lag clocks): the
// ack-lag signal of fast mode. Only changes are reported. Timer pass,
// under flows.
func (m *Middlebox) reportLag(i int32, now time.Time) {
	f := &m.flows.tab.slab[i]
	for j := range int(f.nbranch) {
		var since time.Time
		if f.gone&(1<<j) == 0 {
			since = f.fork.BehindSince(j)
		}
		was := f.lagged&(1<<j) != 0
		if since.IsZero() && !was {
			continue
		}
		if since.IsZero() {
			f.lagged &^= 1 << j
		} else {
			f.lagged |= 1 << j
		}
		if decs := m.flows.det.BranchLag(now, detKey{f.key, uint8(j)}, failover.NodeID(f.nodes[j]), since); len(decs) > 0 {
			m.apply(decs)
		}
	}
}

// wakeReset asks the timer goroutine to act on dead nodes at once
// (applyDeadNodes): reset their anycast flows, shrink forked flows.
func (m *Middlebox) wakeReset() {
	m.resetPending.Store(true)
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// failoverNode returns the detector's view of node ni (false without a
// detector). It takes flows.
func (m *Middlebox) failoverNode(ni int) (failover.NodeStatus, bool) {
	m.flows.Lock()
	defer m.flows.Unlock()
	if m.flows.det == nil {
		return failover.NodeStatus{}, false
	}
	return m.flows.det.NodeState(failover.NodeID(ni))
}
