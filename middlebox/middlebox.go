// Package middlebox is the edge middlebox's data path: it reads packets
// from a netstackio Device in batches, classifies them, rewrites them in
// place and writes them back.
//
//	Device.Read ─► parse + validate ─► classify ─┬─ anycast: flow table, DNAT to a node ─┐
//	                                              ├─ reply from a node: reverse lookup, SNAT ┤
//	                                              ├─ multicast: ackmerge.Flow (fork, merge) ─┤
//	                                              ├─ other traffic to the VIP ─► Stack ──────┤ (ping, RST)
//	                                              └─ anything else: drop, count by reason    │
//	Device.Write ◄──────────────────────────────────────────────────────────────────────────┘
//
// One goroutine (Run) owns the data path. The flow table is guarded by a
// mutex taken once per batch, so the control API (/flows, /dcs, /metrics),
// the idle sweeper and SetNodeLive may be used concurrently with it.
package middlebox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"github.com/sdnkvs/sdnkvs/netstackio"
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
	numReasons
)

var reasonNames = [numReasons]string{
	"truncated", "not_ip", "ipv6", "bad_ip_header", "bad_ip_checksum", "fragment",
	"bad_tcp_header", "bad_tcp_checksum", "not_for_vip", "unknown_flow", "table_full",
	"no_live_node", "multicast_unavailable", "reverse_collision", "fork_refused",
	"stack_refused", "write_failed", "no_buffer",
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

// node is one configured node.
type node struct {
	key   nodeKey
	ap    netip.AddrPort
	dc    int
	live  atomic.Bool
	flows atomic.Int64 // active flows using this node
	total atomic.Uint64
}

// counters are the middlebox's cumulative statistics.
type counters struct {
	pktsIn, pktsOut, bytesIn, bytesOut     atomic.Uint64
	local, rstSent                         atomic.Uint64
	flowsCreated, flowsExpired, flowsReset atomic.Uint64
	branchesRemoved, forkResets            atomic.Uint64
	nodeDowns, nodeUps, failoverRSTs       atomic.Uint64
	probesLost                             atomic.Uint64
	drops                                  [numReasons]atomic.Uint64
}

// Middlebox is the data-path driver. Create it with New, run Run in a
// goroutine, stop it with Close. All exported methods are safe for
// concurrent use.
type Middlebox struct {
	cfg    Config
	dev    netstackio.Device
	stack  *netstackio.Stack
	vip    [4]byte
	ports  *[65536]uint8
	dcs    []DC
	nodes  []*node
	byNode map[nodeKey]uint16
	dcNode [][]uint16 // per DC: global node indexes
	offset int

	mu       sync.Mutex // guards tab and everything a flow holds
	expireMu sync.Mutex // serialises Expire (it owns the timer buffers)
	tab      *flowTable

	writeMu  sync.Mutex
	stackOut [1][]byte

	c counters

	// Data-path state, used only by Run.
	bufs    [][]byte
	sizes   []int
	outs    [][]byte
	pool    bufPool // extra buffers (forked copies, made packets) of the current batch
	pkt     packet.TCP
	fout    ackmerge.Out
	targets [MaxBranches]ackmerge.Target
	nowUnix int64
	nowTime time.Time
	bufLen  int

	// Timer state for forked flows, used by Expire (under mu).
	tout   ackmerge.Out
	tpool  bufPool
	touts  [][]byte
	forked int // forked flows in the table

	// Failure detection (nil without Config.Failover). det is guarded by mu.
	det               *failover.Detector[detKey]
	prober            *prober.Prober
	probeMu           sync.Mutex
	probes            []prober.Result // queued by probeReport
	probesWork        []prober.Result // swapped in by the timer goroutine
	probeWake         chan struct{}
	resetPending      atomic.Bool
	rstPool, rstInUse [][]byte // small buffers for failover RSTs (timer goroutine)

	closeOnce sync.Once
	closed    chan struct{}
	sweepDone chan struct{}
	log       *slog.Logger
}

// tickPoolSize is the number of buffers for packets forked flows' timers
// make (RSTs, SYN-ACKs after a handshake timeout).
const tickPoolSize = 16

// New makes a Middlebox that reads and writes dev. It creates the
// middlebox's own Stack for traffic to the VIP (ping, RSTs for other
// ports). cfg is validated (see Config.Validate). The Middlebox owns dev
// and closes it on Close.
func New(dev netstackio.Device, cfg Config) (*Middlebox, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mtu := dev.MTU()
	if mtu < 576 {
		mtu = 576
	}
	st, err := netstackio.NewStack(cfg.VIP, mtu)
	if err != nil {
		return nil, err
	}
	m := &Middlebox{
		cfg:       cfg,
		dev:       dev,
		stack:     st,
		vip:       addr4(cfg.VIP),
		ports:     new([65536]uint8),
		dcs:       cfg.DCs,
		byNode:    map[nodeKey]uint16{},
		offset:    cfg.Headroom + virtio.HdrLen,
		tab:       newFlowTable(cfg.MaxFlows),
		closed:    make(chan struct{}),
		sweepDone: make(chan struct{}),
		probeWake: make(chan struct{}, 1),
		log:       slog.Default().With("component", "middlebox"),
	}
	for _, p := range cfg.AnycastPorts {
		m.ports[p] = portAnycast
	}
	for _, p := range cfg.MulticastPorts {
		m.ports[p] = portMulticast
	}
	for d, dc := range cfg.DCs {
		var idx []uint16
		for _, ap := range dc.Nodes {
			n := &node{key: nodeKey{addr4(ap.Addr()), ap.Port()}, ap: ap, dc: d}
			n.live.Store(true)
			i := uint16(len(m.nodes))
			m.nodes = append(m.nodes, n)
			m.byNode[n.key] = i
			idx = append(idx, i)
		}
		m.dcNode = append(m.dcNode, idx)
	}
	batch := dev.BatchSize()
	if cfg.BatchSize > 0 && cfg.BatchSize < batch {
		batch = cfg.BatchSize
	}
	if batch < 1 {
		batch = 1
	}
	bufLen := m.offset + netstackio.MaxPacket
	m.bufLen = bufLen
	poolSize := 0
	if len(cfg.MulticastPorts) > 0 {
		poolSize = 4 * batch // copies for the other branches
	}
	total := batch + poolSize + tickPoolSize
	backing := make([]byte, total*bufLen)
	for i := range total {
		b := backing[i*bufLen : (i+1)*bufLen : (i+1)*bufLen]
		switch {
		case i < batch:
			m.bufs = append(m.bufs, b)
		case i < batch+poolSize:
			m.pool.free = append(m.pool.free, b)
		default:
			m.tpool.free = append(m.tpool.free, b)
		}
	}
	m.sizes = make([]int, batch)
	m.outs = make([][]byte, 0, 2*batch+poolSize)
	m.pool.size, m.pool.inUse = bufLen, make([][]byte, 0, poolSize)
	m.fout = ackmerge.Out{Offset: m.offset, Alloc: m.alloc, Pkts: make([]ackmerge.Emit, 0, 2*MaxBranches), Events: make([]ackmerge.Event, 0, 2*MaxBranches)}
	m.tout = ackmerge.Out{Offset: m.offset, Alloc: m.tickAlloc}
	m.tpool.size, m.tpool.inUse = bufLen, make([][]byte, 0, tickPoolSize)
	rl := m.offset + 40
	rb := make([]byte, rstBufs*rl)
	for i := range rstBufs {
		m.rstPool = append(m.rstPool, rb[i*rl:(i+1)*rl:(i+1)*rl])
	}
	m.rstInUse = make([][]byte, 0, rstBufs)
	if cfg.Failover != nil {
		if err := m.startFailover(); err != nil {
			st.Close()
			return nil, err
		}
	}
	st.SetOutput(m.stackOutput)
	go m.sweeper()
	if m.prober != nil {
		m.prober.Start()
	}
	return m, nil
}

// Stack returns the middlebox's own network stack (owner of the VIP).
func (m *Middlebox) Stack() *netstackio.Stack { return m.stack }

// Config returns the validated configuration.
func (m *Middlebox) Config() Config { return m.cfg }

// SetNodeLive marks a node live or dead, as the failure detector's
// decisions do (Config.Failover); with a detector running, its next
// decision about the node overrides this. New flows avoid dead nodes (and
// DCs with no live node) at once; anycast flows on a node marked dead get
// a RST towards their client (which reconnects and lands on a live node);
// forked flows drop its branch at the next timer tick; a node marked live
// again serves new flows only. It reports an error for a node that is not
// configured.
func (m *Middlebox) SetNodeLive(n netip.AddrPort, live bool) error {
	if !n.Addr().Unmap().Is4() {
		return fmt.Errorf("middlebox: unknown node %s", n)
	}
	i, ok := m.byNode[nodeKey{addr4(n.Addr()), n.Port()}]
	if !ok {
		return fmt.Errorf("middlebox: unknown node %s", n)
	}
	if m.nodes[i].live.Swap(live) != live {
		m.log.Info("node liveness", "node", n, "dc", m.dcs[m.nodes[i].dc].Name, "live", live)
		if !live {
			m.wakeReset()
		}
	}
	return nil
}

// NodeLive reports whether a node is currently considered live.
func (m *Middlebox) NodeLive(n netip.AddrPort) bool {
	i, ok := m.byNode[nodeKey{addr4(n.Addr()), n.Port()}]
	return ok && m.nodes[i].live.Load()
}

// Close stops the data path, the sweeper and the Stack, and closes the
// Device. Run returns after Close. Idempotent.
func (m *Middlebox) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closed)
		if m.prober != nil {
			m.prober.Close()
		}
		err = m.dev.Close()
		<-m.sweepDone
		m.stack.Close()
	})
	return err
}

// Run is the data path: it reads, processes and writes batches until the
// Device is closed (returning nil after Close) or fails.
func (m *Middlebox) Run() error {
	for {
		n, err := m.dev.Read(m.bufs, m.sizes, m.offset)
		if err != nil {
			select {
			case <-m.closed:
				return nil
			default:
			}
			if errors.Is(err, netstackio.ErrClosed) {
				return nil
			}
			return fmt.Errorf("middlebox: read %s: %w", m.dev.Name(), err)
		}
		m.processBatch(n)
	}
}

// processBatch handles m.bufs[:n] and writes what is to be forwarded.
// It does not allocate.
func (m *Middlebox) processBatch(n int) {
	m.nowTime = m.cfg.Now()
	m.nowUnix = m.nowTime.UnixNano()
	m.outs = m.outs[:0]
	m.mu.Lock()
	for i := 0; i < n; i++ {
		buf := m.bufs[i]
		size := m.sizes[i]
		m.c.pktsIn.Add(1)
		m.c.bytesIn.Add(uint64(size))
		shift, v := m.process(buf, size)
		switch v {
		case verdictConsumed:
		case verdictForward:
			m.outs = append(m.outs, buf[shift:shift+m.offset+len(m.pkt.Buf)])
		case verdictLocal:
			pkt := buf[m.offset : m.offset+size]
			if m.stack.DeliverVnet(virtio.At(buf, m.offset), pkt) != nil {
				m.drop(ReasonStackRefused)
			} else {
				m.c.local.Add(1)
			}
		}
	}
	m.mu.Unlock()
	if len(m.outs) > 0 {
		m.write(m.outs)
	}
	// Return clone buffers to the pool.
	m.pool.releaseAll()
}

func (m *Middlebox) write(bufs [][]byte) {
	m.writeMu.Lock()
	w, err := m.dev.Write(bufs, m.offset)
	m.writeMu.Unlock()
	if err != nil && w == 0 {
		w = 0
	}
	for _, b := range bufs[:w] {
		m.c.pktsOut.Add(1)
		m.c.bytesOut.Add(uint64(len(b) - m.offset))
	}
	if w < len(bufs) {
		m.c.drops[ReasonWriteFailed].Add(uint64(len(bufs) - w))
	}
}

// stackOutput writes a packet the Stack emits (ICMP echo reply, RST).
func (m *Middlebox) stackOutput(buf []byte, offset int) {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	// The Stack's buffer has exactly virtio.HdrLen in front; Device.Write takes
	// one offset for the batch, so write it with the Stack's offset.
	m.stackOut[0] = buf
	w, _ := m.dev.Write(m.stackOut[:], offset)
	m.stackOut[0] = nil
	if w == 1 {
		m.c.pktsOut.Add(1)
		m.c.bytesOut.Add(uint64(len(buf) - offset))
	} else {
		m.c.drops[ReasonWriteFailed].Add(1)
	}
}

func (m *Middlebox) drop(r Reason) { m.c.drops[r].Add(1) }

type verdict uint8

const (
	verdictDrop verdict = iota
	verdictForward
	verdictLocal
	verdictConsumed // a forked flow took it; its output is in m.outs
)

// process classifies and rewrites the packet in buf[m.offset:m.offset+size].
// On verdictForward m.pkt views the packet to write and shift says how far
// its start moved (payload trims).
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
	p := &m.pkt
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
		switch m.ports[p.DstPort()] {
		case portAnycast:
			return m.fromClient(p, buf)
		case portMulticast:
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

// fromClient handles a packet from a client to a service port of the VIP.
func (m *Middlebox) fromClient(p *packet.TCP, buf []byte) (int, verdict) {
	k := fwdKey{cli: p.SrcAddr4(), cport: p.SrcPort(), vport: p.DstPort()}
	fl := p.Flags()
	syn := fl&(packet.FlagSYN|packet.FlagACK) == packet.FlagSYN
	i, ok := m.tab.fwd[k]
	if ok && syn {
		f := &m.tab.slab[i]
		if f.state == stClosing || f.finCli || f.finSrv {
			// Port reuse after a close: start afresh.
			m.removeFlow(i)
			ok = false
		}
	}
	if !ok {
		if !syn || fl&(packet.FlagRST|packet.FlagFIN) != 0 {
			m.drop(ReasonUnknownFlow)
			return 0, verdictDrop
		}
		var r Reason
		i, r = m.newFlow(k, p.Seq())
		if i < 0 {
			m.drop(r)
			if r == ReasonTableFull || r == ReasonNoLiveNode {
				return m.rstToClient(p)
			}
			return 0, verdictDrop
		}
	}
	if m.det != nil {
		m.observeClient(i, p)
	}
	f := &m.tab.slab[i]
	f.last = m.nowUnix
	f.pktsIn++
	f.bytesIn += uint64(len(p.Buf))
	if fl&packet.FlagACK != 0 {
		if a := p.Ack(); !f.haveCliAck || int32(a-f.cliAck) > 0 {
			f.cliAck, f.haveCliAck = a, true
		}
	}
	if f.kind == kindForked {
		m.stepFork(i, buf, p, ackmerge.ToClient)
		return 0, verdictConsumed
	}
	m.trackClose(f, p, true)
	n := m.nodes[f.nodes[0]]
	p.SetDstAddr(n.ap.Addr())
	p.SetDstPort(n.key.port)
	if fl&packet.FlagRST != 0 {
		m.removeFlow(i)
		m.c.flowsReset.Add(1)
	}
	return 0, verdictForward
}

// fromNode handles a packet from node ni's service port.
func (m *Middlebox) fromNode(p *packet.TCP, ni uint16, buf []byte) (int, verdict) {
	n := m.nodes[ni]
	rk := revKey{node: n.key.addr, cli: p.DstAddr4(), nport: n.key.port, cport: p.DstPort()}
	i, ok := m.tab.rev[rk]
	if !ok {
		m.drop(ReasonUnknownFlow)
		return 0, verdictDrop
	}
	f := &m.tab.slab[i]
	f.last = m.nowUnix
	f.pktsOut++
	f.bytesOut += uint64(len(p.Buf))
	fl := p.Flags()
	if fl&(packet.FlagSYN|packet.FlagACK) == packet.FlagSYN|packet.FlagACK && f.state == stSynSent {
		f.state = stEstablished
	}
	k := 0
	for j := 0; j < int(f.nbranch); j++ {
		if f.nodes[j] == ni {
			k = j
		}
	}
	if m.det != nil {
		m.observeServer(i, k, p)
	}
	if f.kind == kindForked {
		m.stepFork(i, buf, p, k)
		return 0, verdictConsumed
	}
	m.trackClose(f, p, false)
	p.SetSrcAddr(m.cfg.VIP)
	p.SetSrcPort(f.key.vport)
	if fl&packet.FlagRST != 0 {
		m.removeFlow(i)
		m.c.flowsReset.Add(1)
	}
	return 0, verdictForward
}

// stepFork feeds a packet to forked flow i and queues its output.
func (m *Middlebox) stepFork(i int32, buf []byte, p *packet.TCP, from int) {
	f := &m.tab.slab[i]
	m.fout.Reset()
	f.fork.Step(buf, p, from, m.nowTime, &m.fout)
	m.outs = m.drainFork(i, &m.fout, m.outs)
}

// drainFork appends the packets of out to outs and applies its events to
// flow i (which it may remove).
func (m *Middlebox) drainFork(i int32, out *ackmerge.Out, outs [][]byte) [][]byte {
	for _, e := range out.Pkts {
		outs = append(outs, e.Buf)
	}
	f := &m.tab.slab[i]
	for _, ev := range out.Events {
		switch ev.Kind {
		case ackmerge.EvEstablished:
			f.state = stEstablished
		case ackmerge.EvBranchRemoved:
			if ev.Branch >= 0 && ev.Branch < int(f.nbranch) && f.gone&(1<<ev.Branch) == 0 {
				f.gone |= 1 << ev.Branch
				m.nodes[f.nodes[ev.Branch]].flows.Add(-1)
				m.c.branchesRemoved.Add(1)
			}
		case ackmerge.EvClientReset:
			m.c.forkResets.Add(1)
		case ackmerge.EvDone:
			if f.used {
				m.removeFlow(i)
				m.c.flowsExpired.Add(1)
			}
		}
	}
	out.Reset()
	return outs
}

// bufPool is a fixed set of packet buffers handed out during one batch (or
// one timer pass) and all returned at its end. Not safe for concurrent use.
type bufPool struct {
	free  [][]byte
	inUse [][]byte
	size  int // length of every buffer
}

// get returns a free buffer of at least n bytes, or nil when none is left.
func (p *bufPool) get(n int) []byte {
	k := len(p.free)
	if k == 0 || n > p.size {
		return nil
	}
	b := p.free[k-1]
	p.free = p.free[:k-1]
	p.inUse = append(p.inUse, b)
	return b
}

// releaseAll returns every buffer handed out since the last call.
func (p *bufPool) releaseAll() {
	p.free = append(p.free, p.inUse...)
	p.inUse = p.inUse[:0]
}

// alloc gives ackmerge a buffer for an extra packet of the current batch.
func (m *Middlebox) alloc(n int) []byte { return m.counted(m.pool.get(n)) }

// tickAlloc is alloc for packets made by timers (under mu, in Expire).
func (m *Middlebox) tickAlloc(n int) []byte { return m.counted(m.tpool.get(n)) }

// counted counts a buffer shortage (the packet is dropped).
func (m *Middlebox) counted(b []byte) []byte {
	if b == nil {
		m.drop(ReasonNoBuffer)
	}
	return b
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
		f.linger = m.nowUnix + int64(m.cfg.FinLinger)
	}
}

// newFlow creates a flow for a client SYN; it returns -1 and a reason when
// it cannot.
func (m *Middlebox) newFlow(k fwdKey, iss uint32) (int32, Reason) {
	t := m.tab
	forked := m.ports[k.vport] == portMulticast
	var nodes [MaxBranches]uint16
	nb := 0
	h := flowHash(k)
	for d := range m.dcNode {
		if ni, ok := m.pickNode(d, h); ok {
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
	if i < 0 {
		return -1, ReasonTableFull
	}
	f := &t.slab[i]
	*f = flow{used: true, kind: kindAnycast, state: stSynSent, key: k, nodes: nodes, nbranch: uint8(nb), created: m.nowUnix, last: m.nowUnix, cliISS: iss}
	if forked {
		f.kind = kindForked
		for j := range nb {
			n := m.nodes[nodes[j]]
			m.targets[j] = ackmerge.Target{Addr: n.ap, DC: n.dc}
		}
		client := netip.AddrPortFrom(netip.AddrFrom4(k.cli), k.cport)
		ff, err := ackmerge.NewFlow(m.cfg.Fork, client, netip.AddrPortFrom(m.cfg.VIP, k.vport), m.targets[:nb])
		if err != nil {
			t.release(i)
			return -1, ReasonForkRefused
		}
		f.fork = ff
		m.forked++
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

// removeFlow deletes flow i and its keys.
func (m *Middlebox) removeFlow(i int32) {
	t := m.tab
	f := &t.slab[i]
	delete(t.fwd, f.key)
	for j := 0; j < int(f.nbranch); j++ {
		if m.det != nil {
			m.det.FlowEnded(detKey{f.key, uint8(j)})
		}
		n := m.nodes[f.nodes[j]]
		delete(t.rev, revKey{node: n.key.addr, cli: f.key.cli, nport: n.key.port, cport: f.key.cport})
		if f.gone&(1<<j) == 0 {
			n.flows.Add(-1)
		}
	}
	if f.kind == kindForked {
		m.forked--
	}
	t.release(i)
}

// rstToClient turns the client's SYN in m.pkt into a RST+ACK from the VIP
// back to the client, in place (RFC 793: seq 0, ack = SYN's seq + len).
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

// Expire removes flows idle for longer than the idle timeout and closed
// flows whose linger has passed, as of now. It returns how many it
// removed. The sweeper calls it periodically; tests call it directly.
func (m *Middlebox) Expire(now time.Time) int {
	nu := now.UnixNano()
	idle := int64(m.cfg.IdleTimeout)
	m.expireMu.Lock() // owns the timer buffers until they are written
	defer m.expireMu.Unlock()
	m.mu.Lock()
	removed := 0
	m.touts = m.touts[:0]
	for i := range m.tab.slab {
		f := &m.tab.slab[i]
		if !f.used {
			continue
		}
		if nu-f.last >= idle || (f.kind == kindAnycast && f.state == stClosing && nu >= f.linger) {
			m.removeFlow(int32(i))
			removed++
			continue
		}
		if f.kind == kindForked {
			m.tickFork(int32(i), now)
		}
	}
	m.c.flowsExpired.Add(uint64(removed))
	if m.det != nil {
		m.detectorTimers(now)
	}
	m.resetDeadAnycast()
	m.mu.Unlock()
	m.flushTimerOutput()
	return removed
}

// flushTimerOutput writes what a timer pass produced and returns its
// buffers (under expireMu).
func (m *Middlebox) flushTimerOutput() {
	if len(m.touts) > 0 {
		m.write(m.touts)
	}
	m.tpool.releaseAll()
	m.rstPool = append(m.rstPool, m.rstInUse...)
	m.rstInUse = m.rstInUse[:0]
}

// probeTimers feeds queued probe results to the detector and applies its
// decisions, without the full flow-table sweep of Expire.
func (m *Middlebox) probeTimers(now time.Time) {
	m.expireMu.Lock()
	defer m.expireMu.Unlock()
	m.mu.Lock()
	m.touts = m.touts[:0]
	if m.det != nil {
		m.detectorTimers(now)
	}
	m.resetDeadAnycast()
	m.mu.Unlock()
	m.flushTimerOutput()
}

// tickFork runs forked flow i's timers and removes branches on nodes
// declared dead (the flow shrinks, docs/design.md section 4).
func (m *Middlebox) tickFork(i int32, now time.Time) {
	f := &m.tab.slab[i]
	for j := 0; j < int(f.nbranch); j++ {
		if f.gone&(1<<j) == 0 && !m.nodes[f.nodes[j]].live.Load() {
			f.fork.RemoveBranch(j, ackmerge.CauseFailover, now, &m.tout)
			m.touts = m.drainFork(i, &m.tout, m.touts)
			if !f.used {
				return
			}
		}
	}
	f.fork.Tick(now, &m.tout)
	m.touts = m.drainFork(i, &m.tout, m.touts)
}

func (m *Middlebox) sweeper() {
	defer close(m.sweepDone)
	iv := min(time.Second, m.cfg.FinLinger/2, m.cfg.IdleTimeout/4)
	if len(m.cfg.MulticastPorts) > 0 {
		iv = min(iv, m.cfg.TickInterval)
	}
	iv = max(iv, 10*time.Millisecond)
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-m.closed:
			return
		case <-t.C:
			m.Expire(m.cfg.Now())
		case <-m.probeWake:
			m.probeTimers(m.cfg.Now())
		}
	}
}
