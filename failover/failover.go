// Package failover decides which servers and datacentres (DCs) are alive.
// It is a pure state machine: observations and the current time go in,
// decisions come out; it runs no goroutine, opens no socket and never
// reads the clock.
//
//	middlebox ── ClientSegment / ServerSegment / FlowEnded ──┐
//	ackmerge  ── BranchLag ───────────────────────────────────┤
//	prober    ── Probe ───────────────────────────────────────┼─► Detector ─► []Decision
//	timer     ── Tick ────────────────────────────────────────┘     (NodeDown, NodeUp, DCDown, DCUp)
//
// Signals (docs/design.md section 5):
//   - the paper's Algorithm 1 (both modes): a duplicate client segment on a
//     flow whose server has sent nothing since the client's previous
//     segment counts one against the server; any packet from the server
//     resets the count; Config.Threshold (paper: 5) declares the server
//     down. Fast mode also requires that the server has sent nothing for
//     the silence threshold, so random loss on a busy node cannot add up
//     to 5; probe replies do not reset the count (the data path is
//     judged by data), so Fast detects what Paper detects;
//   - silence (Fast): the node has sent nothing and answered no probe for
//     max(SilenceTimeout, srtt+4*rto) while a client has unacknowledged
//     data to it and is still retransmitting it;
//   - ack lag (Fast): a branch of a forked flow has lagged the other
//     branches' acknowledgement for max(AckLagTimeout, srtt+2*rto) and the
//     node has not been heard from since the lag began;
//   - probes (Fast): ProbeMisses consecutive failed or not-ready probes, or
//     DCProbeMisses on every live node of a DC at once.
//
// A DC with no live node is down. A down node comes back (NodeUp) only
// after its probes have all succeeded and reported ready for ReadmitAfter,
// in both modes: without probes a node declared down stays down.
//
// Passive signals need client data in flight: a client that only receives
// (a long reply) retransmits nothing, so only probes see its server die.
//
// Time: every method takes now; a now earlier than one already seen is
// treated as the latest time seen, so time never goes backwards inside.
package failover

import (
	"fmt"
	"net/netip"
	"time"
)

// NodeID names a node: its index in the topology given to New, counting
// the nodes of every DC in order (DC 0's nodes first).
type NodeID int

// DCID names a DC: its index in the topology given to New (0 is the most
// preferred).
type DCID int

// Kind is the kind of a Decision.
type Kind uint8

// Decision kinds.
const (
	NodeDown Kind = iota + 1
	NodeUp
	DCDown
	DCUp
)

// String returns the kind's name, e.g. "NodeDown".
func (k Kind) String() string {
	switch k {
	case NodeDown:
		return "NodeDown"
	case NodeUp:
		return "NodeUp"
	case DCDown:
		return "DCDown"
	case DCUp:
		return "DCUp"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// MarshalText returns the kind's name (for JSON in /dcs).
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Signal is what caused a decision, as a small label for metrics.
type Signal uint8

// Signals.
const (
	SignalNone       Signal = iota
	SignalDuplicates        // paper's Algorithm 1
	SignalSilence           // server silent with unacknowledged client data
	SignalAckLag            // branch ack lag in a forked flow
	SignalProbes            // consecutive failed probes of one node
	SignalDCProbes          // every live node of a DC missed probes at once
	SignalReady             // readmitted after ReadmitAfter of ready probes
	SignalNodes             // DC decision that follows from its nodes
)

var signalNames = [...]string{"none", "duplicates", "silence", "ack_lag", "probes", "dc_probes", "ready", "nodes"}

// String returns a metric-friendly label, e.g. "duplicates".
func (s Signal) String() string {
	if int(s) < len(signalNames) {
		return signalNames[s]
	}
	return fmt.Sprintf("Signal(%d)", uint8(s))
}

// MarshalText returns the signal's label (for JSON in /dcs).
func (s Signal) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Decision is one state change. Node is meaningful for NodeDown and NodeUp
// (-1 otherwise); DC is the DC concerned (the node's DC for node
// decisions). Cause is a human-readable reason for logs and /dcs.
type Decision struct {
	Kind   Kind
	Node   NodeID
	DC     DCID
	Signal Signal
	Cause  string
}

// Transition is a Decision with the time it was taken.
type Transition struct {
	At time.Time
	Decision
}

// NodeInfo is a node's static description.
type NodeInfo struct {
	ID   NodeID
	DC   DCID
	Addr netip.AddrPort
}

// NodeStatus is a snapshot of a node's state, for display.
type NodeStatus struct {
	NodeInfo
	Up        bool
	Since     time.Time     // last transition (zero if none)
	Cause     string        // cause of the last transition
	LastHeard time.Time     // last server packet or successful probe
	Dups      int           // Algorithm 1 count
	Misses    int           // consecutive failed or not-ready probes
	SRTT      time.Duration // smoothed probe RTT (InitialRTT before any sample)
}

// DCStatus is a snapshot of a DC's state.
type DCStatus struct {
	ID    DCID
	Name  string
	Up    bool
	Live  int // live nodes
	Nodes int // all nodes
	Since time.Time
	Cause string
}

// Stats counts observations; every field only grows.
type Stats struct {
	ClientSegments uint64
	ServerSegments uint64
	Probes         uint64
	Duplicates     uint64 // duplicate client segments counted by Algorithm 1
	FlowsEvicted   uint64 // flows forgotten to make room for new ones (MaxFlows reached)
	FlowsExpired   uint64 // flows forgotten after FlowIdle
	BadInput       uint64 // observations naming an unknown node, negative lengths, ...
	NodeDowns      uint64
	NodeUps        uint64
	DCDowns        uint64
	DCUps          uint64
	TimeWentBack   uint64 // observations whose now was earlier than one already seen
	PassiveHeld    uint64 // Safe mode: passive decisions held (last live DC, rate limit)
	LastDCHeld     uint64 // Safe and Fast modes: decisions held because they would take down the last live DC
	// ProbeStreaksRefuted counts streaks of failed probes ended by a new
	// reply of the node on the data path (Fast and Safe modes).
	ProbeStreaksRefuted uint64
}

type nodeState struct {
	info  NodeInfo
	up    bool
	since time.Time
	cause string
	heard time.Time // last non-RST server packet or successful probe
	// lastServer is the last packet of any kind from the node (zero if
	// none yet); dups the Algorithm 1 count since then.
	lastServer time.Time
	dups       int
	misses     int
	// missSince is when the current streak of failed probes began (its
	// first miss was observed); missNotReady: a probe of the streak was
	// answered with "not ready", which the data path cannot refute.
	missSince    time.Time
	missNotReady bool
	// readySince is the start of the current run of ready probes (zero if
	// the last probe failed or was not ready).
	readySince time.Time

	// outstanding counts tracked flows whose client has unacknowledged
	// data to this node; outSince is when the count last went from 0 to 1.
	outstanding int
	outSince    time.Time
	// lagging counts tracked flows whose branch to this node lags.
	lagging int
	// suspect: Tick's cheap node-level silence check passed; the flows
	// of this node are checked one by one.
	suspect bool

	srtt, rttvar time.Duration
	haveRTT      bool

	// Safe mode's evidence in the current epoch (since the node's last
	// packet): distinct clients and flows that counted a duplicate, and
	// when the first did.
	epoch     uint32
	evClients [4]netip.Addr
	nClients  int
	nFlows    int
	evSince   time.Time
	probed    bool // a probe result has been seen
}

type dcState struct {
	name  string
	nodes []NodeID
	live  int
	since time.Time
	cause string
	stale bool // not current (SetCurrent)
}

// Detector is the failure detector of one middlebox. K is the caller's
// flow key: any comparable value (a packed 5-tuple, a flow-table index).
//
// How the middlebox drives it: report every client segment it forwards to
// a node (ClientSegment) and every segment from a node (ServerSegment);
// a forked flow is one detector flow per branch, with a key that includes
// the branch, and its lagging branches are reported with BranchLag. Call
// FlowEnded when a flow or branch goes away (close, reset, branch removed,
// flow moved), Probe for each probe result, and Tick every 10-50 ms. Apply
// every returned decision at once.
//
// A Detector is not safe for concurrent use: the middlebox calls it from
// one goroutine. Slices of decisions it returns are owned by the Detector
// and valid until its next observation or Tick.
type Detector[K comparable] struct {
	cfg   Config
	nodes []nodeState
	dcs   []dcState
	byAdr map[netip.AddrPort]NodeID
	ft    *flowTable[K]

	now         time.Time
	lastGC      time.Time
	lastPassive time.Time // last NodeDown on passive evidence (Safe mode)
	lagTotal    int

	out   []Decision
	hist  []Transition // ring
	hnext int
	hlen  int
	stats Stats
}

// New returns a detector for the topology topo (DCs in preference order).
// cfg's zero fields take defaults; cfg and topo are validated and an error
// names the offending field.
func New[K comparable](cfg Config, topo []DC) (*Detector[K], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ValidateTopology(topo); err != nil {
		return nil, fmt.Errorf("failover: topology: %w", err)
	}
	cfg = cfg.withDefaults()
	d := &Detector[K]{
		cfg:   cfg,
		byAdr: make(map[netip.AddrPort]NodeID),
		ft:    newFlowTable[K](),
		out:   make([]Decision, 0, 16),
		hist:  make([]Transition, cfg.History),
	}
	for di, dc := range topo {
		ds := dcState{name: dc.Name, live: len(dc.Nodes)}
		if cfg.StartDown {
			ds.live = 0
		}
		for _, a := range dc.Nodes {
			id := NodeID(len(d.nodes))
			d.nodes = append(d.nodes, nodeState{
				info: NodeInfo{ID: id, DC: DCID(di), Addr: a},
				up:   !cfg.StartDown,
				srtt: cfg.InitialRTT, rttvar: cfg.InitialRTT / 2,
			})
			d.byAdr[a] = id
			ds.nodes = append(ds.nodes, id)
		}
		d.dcs = append(d.dcs, ds)
	}
	return d, nil
}

// Config returns the configuration in effect (defaults filled in).
func (d *Detector[K]) Config() Config { return d.cfg }

// NumNodes returns the number of nodes; NodeIDs are 0..NumNodes()-1.
func (d *Detector[K]) NumNodes() int { return len(d.nodes) }

// NumDCs returns the number of DCs; DCIDs are 0..NumDCs()-1.
func (d *Detector[K]) NumDCs() int { return len(d.dcs) }

// NodeByAddr returns the node with service address a.
func (d *Detector[K]) NodeByAddr(a netip.AddrPort) (NodeID, bool) {
	id, ok := d.byAdr[a]
	return id, ok
}

// Node returns node n's static description; ok is false for an unknown n.
func (d *Detector[K]) Node(n NodeID) (NodeInfo, bool) {
	if !d.validNode(n) {
		return NodeInfo{}, false
	}
	return d.nodes[n].info, true
}

// NodeUp reports whether node n is live (false for an unknown n).
func (d *Detector[K]) NodeUp(n NodeID) bool {
	return d.validNode(n) && d.nodes[n].up
}

// NodeState returns a snapshot of node n; ok is false for an unknown n.
func (d *Detector[K]) NodeState(n NodeID) (s NodeStatus, ok bool) {
	if !d.validNode(n) {
		return NodeStatus{}, false
	}
	ns := &d.nodes[n]
	return NodeStatus{
		NodeInfo: ns.info, Up: ns.up, Since: ns.since, Cause: ns.cause,
		LastHeard: ns.heard, Dups: ns.dups, Misses: ns.misses, SRTT: ns.srtt,
	}, true
}

// DCUp reports whether DC dc has a live node (false for an unknown dc).
func (d *Detector[K]) DCUp(dc DCID) bool {
	return d.validDC(dc) && d.dcs[dc].live > 0
}

// DCState returns a snapshot of DC dc; ok is false for an unknown dc.
func (d *Detector[K]) DCState(dc DCID) (s DCStatus, ok bool) {
	if !d.validDC(dc) {
		return DCStatus{}, false
	}
	ds := &d.dcs[dc]
	return DCStatus{ID: dc, Name: ds.name, Up: ds.live > 0, Live: ds.live,
		Nodes: len(ds.nodes), Since: ds.since, Cause: ds.cause}, true
}

// DCByName returns the DC named name.
func (d *Detector[K]) DCByName(name string) (DCID, bool) {
	for i := range d.dcs {
		if d.dcs[i].name == name {
			return DCID(i), true
		}
	}
	return -1, false
}

// PreferredDC returns the most preferred DC that is up; ok is false when
// every DC is down.
func (d *Detector[K]) PreferredDC() (dc DCID, ok bool) {
	for i := range d.dcs {
		if d.dcs[i].live > 0 {
			return DCID(i), true
		}
	}
	return -1, false
}

// LiveNodes appends the live nodes of dc, in topology order, to dst and
// returns it. It allocates nothing when dst has room.
func (d *Detector[K]) LiveNodes(dc DCID, dst []NodeID) []NodeID {
	if !d.validDC(dc) {
		return dst
	}
	for _, n := range d.dcs[dc].nodes {
		if d.nodes[n].up {
			dst = append(dst, n)
		}
	}
	return dst
}

// Transitions returns up to Config.History most recent decisions, oldest
// first, in a new slice.
func (d *Detector[K]) Transitions() []Transition {
	out := make([]Transition, 0, d.hlen)
	start := d.hnext - d.hlen
	if start < 0 {
		start += len(d.hist)
	}
	for i := 0; i < d.hlen; i++ {
		out = append(out, d.hist[(start+i)%len(d.hist)])
	}
	return out
}

// Stats returns the counters.
func (d *Detector[K]) Stats() Stats { return d.stats }

// Now returns the latest time the detector has seen.
func (d *Detector[K]) Now() time.Time { return d.now }

// NumFlows returns the number of flows tracked.
func (d *Detector[K]) NumFlows() int { return d.ft.len() }

func (d *Detector[K]) validNode(n NodeID) bool { return n >= 0 && int(n) < len(d.nodes) }
func (d *Detector[K]) validDC(dc DCID) bool    { return dc >= 0 && int(dc) < len(d.dcs) }

// advance moves the clock to now (never backwards) and resets the output.
func (d *Detector[K]) advance(now time.Time) {
	d.out = d.out[:0]
	if now.Before(d.now) {
		d.stats.TimeWentBack++
		return
	}
	d.now = now
}

func (d *Detector[K]) record(dec Decision) {
	d.out = append(d.out, dec)
	if len(d.hist) > 0 {
		d.hist[d.hnext] = Transition{At: d.now, Decision: dec}
		d.hnext = (d.hnext + 1) % len(d.hist)
		if d.hlen < len(d.hist) {
			d.hlen++
		}
	}
}

// markDown declares live node n down and, if it was its DC's last live
// node, the DC too.
//
// Outside Paper mode, a decision that would take down the last live DC is
// held and counted instead (Envoy's panic threshold): when every DC looks
// dead at once the likelier cause is the middlebox's own side (a starved
// prober, its own link), and refusing every client gains nothing over
// still trying the last DC. Paper mode keeps the paper's Algorithm 1.
func (d *Detector[K]) markDown(n NodeID, sig Signal, cause string) {
	ns := &d.nodes[n]
	if !ns.up {
		return
	}
	if d.cfg.Mode != Paper && d.lastCurrent(ns.info.DC) {
		d.stats.LastDCHeld++
		return
	}
	ns.up = false
	ns.since = d.now
	ns.cause = cause
	ns.readySince = time.Time{}
	ns.heardServer()
	d.stats.NodeDowns++
	cause = fmt.Sprintf("node %v: %s", ns.info.Addr, cause)
	d.record(Decision{Kind: NodeDown, Node: n, DC: ns.info.DC, Signal: sig, Cause: cause})
	dc := &d.dcs[ns.info.DC]
	dc.live--
	if dc.live == 0 {
		dc.since = d.now
		dc.cause = "no live node (last " + cause + ")"
		d.stats.DCDowns++
		d.record(Decision{Kind: DCDown, Node: -1, DC: ns.info.DC, Signal: SignalNodes, Cause: dc.cause})
	}
}

// markUp readmits down node n and, if its DC had no live node, the DC.
func (d *Detector[K]) markUp(n NodeID, cause string) {
	ns := &d.nodes[n]
	if ns.up {
		return
	}
	ns.up = true
	ns.since = d.now
	ns.cause = cause
	ns.heardServer()
	ns.misses = 0
	ns.heard = d.now
	if ns.outstanding > 0 {
		ns.outSince = d.now
	}
	d.stats.NodeUps++
	cause = fmt.Sprintf("node %v: %s", ns.info.Addr, cause)
	d.record(Decision{Kind: NodeUp, Node: n, DC: ns.info.DC, Signal: SignalReady, Cause: cause})
	dc := &d.dcs[ns.info.DC]
	dc.live++
	if dc.live == 1 {
		dc.since = d.now
		dc.cause = "first live node (" + cause + ")"
		d.stats.DCUps++
		d.record(Decision{Kind: DCUp, Node: -1, DC: ns.info.DC, Signal: SignalNodes, Cause: dc.cause})
	}
}
