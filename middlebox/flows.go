package middlebox

import (
	"net/netip"

	"github.com/sdnkvs/sdnkvs/ackmerge"
)

// Flow kinds.
const (
	kindAnycast uint8 = iota + 1
	kindForked
)

// Flow states. Flows in stSynSent, stSynRecv and stAdopted are half-open:
// on the table's half-open list, counted against their source's quota,
// removed HalfOpenTimeout after creation, and evicted first when the table
// is full.
const (
	stSynSent     uint8 = iota + 1 // client SYN seen, node has not answered
	stSynRecv                      // anycast: the node's SYN-ACK seen, not yet the client's ACK
	stAdopted                      // anycast: a packet of an unknown flow, re-adopted; the node has not answered
	stEstablished                  // anycast: the client acknowledged the node's SYN-ACK (or the node answered an adopted flow); forked: ackmerge says so
	stClosing                      // both FINs seen: lingering
)

// fwdKey identifies a flow as the client sends it: client address and port,
// VIP port. Packed, comparable and pointer-free.
type fwdKey struct {
	cli   [4]byte
	cport uint16
	vport uint16
}

// revKey identifies a flow as a node answers it.
type revKey struct {
	node  [4]byte
	cli   [4]byte
	nport uint16
	cport uint16
}

// nodeKey identifies a node (address and service port).
type nodeKey struct {
	addr [4]byte
	port uint16
}

// flow is one entry of the flow table. Flows live in a slab and are
// referred to by index.
type flow struct {
	used        bool
	kind        uint8
	state       uint8
	finCli      bool // the client sent a FIN (at sequence number finCliSeq)
	finSrv      bool // the node sent a FIN (at finSrvSeq)
	finCliAcked bool
	finSrvAcked bool
	finCliSeq   uint32
	finSrvSeq   uint32
	nbranch     uint8
	key         fwdKey
	nodes       [MaxBranches]uint16 // global node indexes, one per branch
	created     int64               // unix nanoseconds
	last        int64
	linger      int64 // when stClosing: remove at this time
	pktsIn      uint64
	pktsOut     uint64
	bytesIn     uint64 // client -> nodes, IP bytes
	bytesOut    uint64
	cliISS      uint32 // the client's SYN sequence number
	cliAck      uint32 // the client's highest acknowledgement (its rcv.nxt)
	haveCliAck  bool
	srvAck      uint32 // anycast: the node's highest acknowledgement (its rcv.nxt)
	haveSrvAck  bool
	fork        *ackmerge.Flow
	gone        uint8  // bitmask of branches the fork removed
	lagged      uint8  // bitmask of branches reported lagging to the detector
	lacks       uint64 // bitmask of DCs the forked flow lacks (lifecycle.go)
	// The half-open list (oldest first), while halfOpen.
	halfOpen       bool
	hoPrev, hoNext int32
}

// flowTable is the bounded flow table. It is guarded by Middlebox.flows.
type flowTable struct {
	max   int
	slab  []flow
	free  []int32
	fwd   map[fwdKey]int32
	rev   map[revKey]int32
	count int
	// Half-open flows: a list in creation order and a count per source.
	hoHead, hoTail int32
	hoCount        int
	hoBySrc        map[[4]byte]int32
	// bySrc counts every flow per client address (MaxFlowsPerSource).
	bySrc map[[4]byte]int32
}

func newFlowTable(max int) *flowTable {
	hint := min(max, 4096)
	return &flowTable{
		max:  max,
		slab: make([]flow, 0, hint),
		free: make([]int32, 0, hint),
		fwd:  make(map[fwdKey]int32, hint),
		rev:  make(map[revKey]int32, hint),

		hoHead:  -1,
		hoTail:  -1,
		hoBySrc: make(map[[4]byte]int32),
		bySrc:   make(map[[4]byte]int32),
	}
}

// addHalfOpen puts flow i at the end of the half-open list and counts it
// against its source.
func (t *flowTable) addHalfOpen(i int32) {
	f := &t.slab[i]
	if f.halfOpen {
		return
	}
	f.halfOpen, f.hoPrev, f.hoNext = true, t.hoTail, -1
	if t.hoTail >= 0 {
		t.slab[t.hoTail].hoNext = i
	} else {
		t.hoHead = i
	}
	t.hoTail = i
	t.hoCount++
	t.hoBySrc[f.key.cli]++
}

// dropHalfOpen takes flow i off the half-open list (it is established or
// going away).
func (t *flowTable) dropHalfOpen(i int32) {
	f := &t.slab[i]
	if !f.halfOpen {
		return
	}
	if f.hoPrev >= 0 {
		t.slab[f.hoPrev].hoNext = f.hoNext
	} else {
		t.hoHead = f.hoNext
	}
	if f.hoNext >= 0 {
		t.slab[f.hoNext].hoPrev = f.hoPrev
	} else {
		t.hoTail = f.hoPrev
	}
	f.halfOpen, f.hoPrev, f.hoNext = false, -1, -1
	t.hoCount--
	if n := t.hoBySrc[f.key.cli] - 1; n > 0 {
		t.hoBySrc[f.key.cli] = n
	} else {
		delete(t.hoBySrc, f.key.cli)
	}
}

// alloc returns the index of a free slot, or -1 when the table is full.
func (t *flowTable) alloc() int32 {
	if t.count >= t.max {
		return -1
	}
	var i int32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		t.slab = append(t.slab, flow{})
		i = int32(len(t.slab) - 1)
	}
	t.count++
	return i
}

// release frees slot i (its keys must already be removed).
func (t *flowTable) release(i int32) {
	if f := &t.slab[i]; f.used {
		if n := t.bySrc[f.key.cli] - 1; n > 0 {
			t.bySrc[f.key.cli] = n
		} else {
			delete(t.bySrc, f.key.cli)
		}
	}
	t.slab[i] = flow{}
	t.free = append(t.free, i)
	t.count--
}

// newFlow creates a half-open flow, in state st (stSynSent for a client
// SYN, stAdopted for an anycast packet of an unknown flow); it returns -1
// and a reason when it cannot: the source's half-open quota is used up,
// or the table is full of established flows (a full table evicts the
// oldest half-open flow first). Under flows, on the data path.
func (m *Middlebox) newFlow(k fwdKey, iss uint32, st uint8) (int32, Reason) {
	t := m.flows.tab
	if int(t.hoBySrc[k.cli]) >= m.cfg.MaxHalfOpenPerSource {
		return -1, ReasonHalfOpenQuota
	}
	if m.cfg.MaxFlowsPerSource > 0 && int(t.bySrc[k.cli]) >= m.cfg.MaxFlowsPerSource {
		return -1, ReasonFlowQuota
	}
	forked := m.ports[k.vport] == portMulticast
	if m.lifeRefuse() {
		m.life.refused.Add(1)
		return -1, ReasonNoCurrentDC
	}
	var nodes [MaxBranches]uint16
	nb := 0
	h := flowHash(k)
	var unreachable uint64 // DCs left out of a forked flow for want of a live node
	// With a lifecycle, a forked flow lists live DCs first, then joining
	// ones (each in preference order): a tie of reply verification goes to
	// the branch first in the flow, so a stale DC loses it (pass 0: live
	// DCs, pass 1: the others; without a lifecycle, one pass over all).
	passes := 1
	if forked && m.life != nil {
		passes = 2
	}
	for k := range passes * len(m.dcNode) {
		d := k % len(m.dcNode)
		if passes == 2 && m.lifeAnycastOK(d) != (k < len(m.dcNode)) {
			continue
		}
		if !forked && !m.lifeAnycastOK(d) {
			continue // anycast: current DCs only
		}
		ni, ok := m.pickNode(d, h)
		if !ok && d < 64 {
			unreachable |= 1 << d
		}
		if ok {
			nodes[nb] = ni
			nb++
			if !forked || nb == MaxBranches {
				break
			}
		}
	}
	if nb == 0 {
		return -1, ReasonNoLiveNode
	}
	for j := range nb {
		n := m.nodes[nodes[j]]
		if _, taken := t.rev[revKey{node: n.key.addr, cli: k.cli, nport: n.key.port, cport: k.cport}]; taken {
			return -1, ReasonReverseCollision
		}
	}
	i := t.alloc()
	if i < 0 && t.hoHead >= 0 {
		m.removeFlow(t.hoHead)
		m.c.halfOpenEvicted.Add(1)
		i = t.alloc()
	}
	if i < 0 {
		return -1, ReasonTableFull
	}
	now := m.dp.nowUnix
	f := &t.slab[i]
	*f = flow{used: true, kind: kindAnycast, state: st, key: k, nodes: nodes, nbranch: uint8(nb), created: now, last: now, cliISS: iss}
	t.bySrc[k.cli]++
	t.addHalfOpen(i)
	if forked {
		f.kind = kindForked
		targets := &m.dp.targets
		for j := range nb {
			n := m.nodes[nodes[j]]
			targets[j] = ackmerge.Target{Addr: n.ap, DC: n.dc}
		}
		client := netip.AddrPortFrom(netip.AddrFrom4(k.cli), k.cport)
		ff, err := ackmerge.NewFlow(m.cfg.Fork, client, netip.AddrPortFrom(m.cfg.VIP, k.vport), targets[:nb])
		if err != nil {
			t.dropHalfOpen(i)
			t.release(i)
			return -1, ReasonForkRefused
		}
		f.fork = ff
		m.flows.forked++
		if m.seq != nil {
			m.seqOpen(i)
		}
		if m.life != nil {
			// The DCs left out (down) never get this flow's bytes.
			m.lifeFlowLacks(i, unreachable, m.dp.nowTime)
		}
	}
	t.fwd[k] = i
	for j := range nb {
		n := m.nodes[nodes[j]]
		t.rev[revKey{node: n.key.addr, cli: k.cli, nport: n.key.port, cport: k.cport}] = i
		n.flows.Add(1)
		n.total.Add(1)
	}
	m.c.flowsCreated.Add(1)
	return i, 0
}

// removeFlow deletes flow i and its keys (under flows).
func (m *Middlebox) removeFlow(i int32) {
	t := m.flows.tab
	f := &t.slab[i]
	if m.seq != nil {
		m.seqClose(i)
	}
	delete(t.fwd, f.key)
	for j := 0; j < int(f.nbranch); j++ {
		if m.flows.det != nil {
			m.flows.det.FlowEnded(detKey{f.key, uint8(j)})
		}
		n := m.nodes[f.nodes[j]]
		delete(t.rev, revKey{node: n.key.addr, cli: f.key.cli, nport: n.key.port, cport: f.key.cport})
		if f.gone&(1<<j) == 0 {
			n.flows.Add(-1)
		}
	}
	if f.kind == kindForked {
		m.flows.forked--
		if m.life != nil {
			m.lifeFlowGone(i)
		}
	}
	t.dropHalfOpen(i)
	t.release(i)
}

// establish marks flow i established: off the half-open list.
func (m *Middlebox) establish(i int32) {
	m.flows.tab.slab[i].state = stEstablished
	m.flows.tab.dropHalfOpen(i)
}

// expireHalfOpen removes half-open flows created HalfOpenTimeout or more
// before now (the list is in creation order) and returns how many.
func (m *Middlebox) expireHalfOpen(now int64) int {
	t := m.flows.tab
	n := 0
	for t.hoHead >= 0 && now-t.slab[t.hoHead].created >= int64(m.cfg.HalfOpenTimeout) {
		m.removeFlow(t.hoHead)
		n++
	}
	return n
}

func addr4(a netip.Addr) [4]byte { return a.Unmap().As4() }

// flowHash mixes a flow key into a well-spread 32-bit value (for choosing
// a node).
func flowHash(k fwdKey) uint32 {
	h := uint64(k.cli[0])<<24 | uint64(k.cli[1])<<16 | uint64(k.cli[2])<<8 | uint64(k.cli[3])
	h = h<<32 | uint64(k.cport)<<16 | uint64(k.vport)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h)
}
