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
// Files, one concern each: classify.go (parse, validate, dispatch by
// flow), anycast.go (DNAT/SNAT of anycast flows, node choice, close
// tracking), fork.go (forked flows and their buffers), flows.go (the flow
// table), timers.go (idle expiry, forked flows' timers, the sweeper),
// rst.go (RSTs the middlebox makes), detector.go (the failure detector and
// its probes), control.go (the control API).
//
// One goroutine (Run) owns the data path. The flow table is guarded by a
// mutex taken once per batch, so the control API (/flows, /dcs, /metrics),
// the idle sweeper and SetNodeLive may be used concurrently with it.
package middlebox

import (
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
	replyMismatches                        atomic.Uint64
	nodeDowns, nodeUps, failoverRSTs       atomic.Uint64
	probesLost                             atomic.Uint64
	flowsAdopted, halfOpenEvicted          atomic.Uint64
	halfOpenExpired, rstPassed             atomic.Uint64
	drops                                  [numReasons]atomic.Uint64
}

// Middlebox is the data-path driver. Create it with New, run Run in a
// goroutine, stop it with Close. All exported methods are safe for
// concurrent use.
//
// Locks, always taken in this order: timers, flows, probes; writer is a
// leaf. Methods that must be called with flows held say so.
type Middlebox struct {
	// Immutable after New.
	cfg    Config
	dev    netstackio.Device
	stack  *netstackio.Stack
	vip    [4]byte
	ports  *[65536]uint8 // port kind of each VIP port
	dcs    []failover.DC
	nodes  []*node // every DC's nodes, DC 0's first (index = failover.NodeID)
	byNode map[nodeKey]uint16
	// nodeAddr holds every node's address: no client sends from one.
	nodeAddr map[[4]byte]bool
	dcNode   [][]uint16 // per DC: global node indexes
	offset   int        // packet offset in every buffer (headroom + virtio-net header)
	prober   *prober.Prober
	log      *slog.Logger
	// seq is the sequencer (nil without Config.Sequencing); its clock and
	// per-flow stampers are under flows, each order stream's queue under
	// its own leaf lock (sequence.go, order.go).
	seq *sequencing
	// life is the DC lifecycle (nil without Config.Lifecycle), under flows
	// (lifecycle.go).
	life *lifecycle

	c counters // atomics, lock-free

	// flows is the flow table and everything a flow holds (its
	// ackmerge.Flow), and the failure detector. The data path takes it
	// once per batch; timer passes and the control API take it too.
	flows struct {
		sync.Mutex
		tab    *flowTable
		forked int                        // forked flows in tab
		det    *failover.Detector[detKey] // nil without Config.Failover
		// mismatchLog rate-limits the reply mismatch logs (fork_verify.go).
		mismatchLog mismatchLog
	}

	// dp is the data path's state, used only by the Run goroutine (within
	// a batch, under flows).
	dp struct {
		bufs    [][]byte
		sizes   []int
		outs    [][]byte
		pool    bufPool // extra buffers (forked copies, made packets) of the current batch
		pkt     packet.TCP
		fout    ackmerge.Out
		targets [MaxBranches]ackmerge.Target
		nowUnix int64
		nowTime time.Time
	}

	// timers serialises timer passes (Expire, probeTimers) and guards the
	// buffers they make packets in until those are written. Taken before
	// flows.
	timers struct {
		sync.Mutex
		out               ackmerge.Out
		pool              bufPool  // forked flows' timer packets
		reserve           int      // buffers one flow's timers may need (tickPool)
		outs              [][]byte // packets of the current pass
		rstPool, rstInUse [][]byte // small buffers for failover RSTs
		probeWork         []prober.Result
	}

	// probes is the queue of probe results, from the prober's goroutines
	// to the timer goroutine.
	probes struct {
		sync.Mutex
		queue []prober.Result
	}
	wake         chan struct{} // wakes the sweeper for probes and resets
	resetPending atomic.Bool   // flows on a dead node await applyDeadNodes

	// writer serialises Device writes (data path, timers, Stack).
	writer struct {
		sync.Mutex
		stackOut [1][]byte
	}

	closeOnce sync.Once
	closed    chan struct{}
	sweepDone chan struct{}
}

// tickPool is the number of buffers for packets forked flows' timers make
// (RSTs, SYN-ACKs after a handshake timeout, held reply bytes after a
// branch removal); a timer pass writes what it has made when fewer than
// tickReserve (what one flow's timers can make at most: its RSTs and ACKs,
// and its held bytes in segments of at least 536 bytes) are left.
func tickPool(holdBytes int) (size, reserve int) {
	if holdBytes == 0 {
		holdBytes = ackmerge.DefaultHoldBytes
	}
	reserve = 2*MaxBranches + 2 + (max(holdBytes, 0)+535)/536
	return max(32, 2*reserve), reserve
}

// New makes a Middlebox that reads and writes dev. It creates the
// middlebox's own Stack for traffic to the VIP (ping, RSTs for other
// ports). cfg is validated (see Config.Validate). The Middlebox owns dev
// and closes it on Close.
func New(dev netstackio.Device, cfg Config) (*Middlebox, error) {
	cfg = cfg.withDefaults()
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
		nodeAddr:  map[[4]byte]bool{},
		offset:    cfg.Headroom + virtio.HdrLen,
		closed:    make(chan struct{}),
		sweepDone: make(chan struct{}),
		wake:      make(chan struct{}, 1),
		log:       slog.Default().With("component", "middlebox"),
	}
	m.flows.tab = newFlowTable(cfg.MaxFlows)
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
			m.nodeAddr[n.key.addr] = true
			idx = append(idx, i)
		}
		m.dcNode = append(m.dcNode, idx)
	}
	m.allocBuffers()
	if cfg.Lifecycle != nil {
		if err := m.startLifecycle(); err != nil {
			st.Close()
			return nil, err
		}
	}
	if cfg.Sequencing != nil {
		if err := m.startSequencing(); err != nil {
			m.stopLifecycle()
			st.Close()
			return nil, err
		}
	}
	if cfg.Failover != nil {
		if err := m.startFailover(); err != nil {
			m.stopSequencing()
			m.stopLifecycle()
			st.Close()
			return nil, err
		}
		if m.life != nil {
			for d := range m.dcs {
				m.flows.det.SetCurrent(failover.DCID(d), m.life.m.Current(failover.DCID(d)))
			}
		}
	}
	st.SetOutput(m.stackOutput)
	go m.sweeper()
	if m.prober != nil {
		m.prober.Start()
	}
	return m, nil
}

// allocBuffers makes every packet buffer the Middlebox uses, in one
// backing array: the batch, the batch's pool of extra packets, the timer
// pool and the failover RSTs.
func (m *Middlebox) allocBuffers() {
	batch := m.dev.BatchSize()
	if m.cfg.BatchSize > 0 && m.cfg.BatchSize < batch {
		batch = m.cfg.BatchSize
	}
	if batch < 1 {
		batch = 1
	}
	bufLen := m.offset + netstackio.MaxPacket
	poolSize := 0
	if len(m.cfg.MulticastPorts) > 0 {
		poolSize = 4 * batch // copies for the other branches
	}
	tickPoolSize, reserve := tickPool(m.cfg.Fork.HoldBytes)
	m.timers.reserve = reserve
	total := batch + poolSize + tickPoolSize
	backing := make([]byte, total*bufLen)
	for i := range total {
		b := backing[i*bufLen : (i+1)*bufLen : (i+1)*bufLen]
		switch {
		case i < batch:
			m.dp.bufs = append(m.dp.bufs, b)
		case i < batch+poolSize:
			m.dp.pool.free = append(m.dp.pool.free, b)
		default:
			m.timers.pool.free = append(m.timers.pool.free, b)
		}
	}
	m.dp.sizes = make([]int, batch)
	m.dp.outs = make([][]byte, 0, 2*batch+poolSize)
	m.dp.pool.size, m.dp.pool.inUse = bufLen, make([][]byte, 0, poolSize)
	m.dp.fout = ackmerge.Out{Offset: m.offset, Alloc: m.alloc, Pkts: make([]ackmerge.Emit, 0, 2*MaxBranches), Events: make([]ackmerge.Event, 0, 2*MaxBranches)}
	m.timers.out = ackmerge.Out{Offset: m.offset, Alloc: m.tickAlloc}
	m.timers.pool.size, m.timers.pool.inUse = bufLen, make([][]byte, 0, tickPoolSize)
	rl := m.offset + 40
	rb := make([]byte, rstBufs*rl)
	for i := range rstBufs {
		m.timers.rstPool = append(m.timers.rstPool, rb[i*rl:(i+1)*rl:(i+1)*rl])
	}
	m.timers.rstInUse = make([][]byte, 0, rstBufs)
}

// Stack returns the middlebox's own network stack (owner of the VIP).
func (m *Middlebox) Stack() *netstackio.Stack { return m.stack }

// Config returns the configuration, with its defaults filled in.
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
	if m.life != nil {
		m.flows.Lock()
		m.syncReach(m.cfg.Now())
		m.flows.Unlock()
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
		m.stopSequencing()
		m.stopLifecycle()
		m.stack.Close()
	})
	return err
}

// Run is the data path: it reads, processes and writes batches until the
// Device is closed (returning nil after Close) or fails.
func (m *Middlebox) Run() error {
	for {
		n, err := m.dev.Read(m.dp.bufs, m.dp.sizes, m.offset)
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

// processBatch handles m.dp.bufs[:n] and writes what is to be forwarded.
// It does not allocate.
func (m *Middlebox) processBatch(n int) {
	dp := &m.dp
	dp.nowTime = m.cfg.Now()
	dp.nowUnix = dp.nowTime.UnixNano()
	dp.outs = dp.outs[:0]
	m.flows.Lock()
	for i := 0; i < n; i++ {
		buf := dp.bufs[i]
		size := dp.sizes[i]
		m.c.pktsIn.Add(1)
		m.c.bytesIn.Add(uint64(size))
		shift, v := m.process(buf, size)
		switch v {
		case verdictConsumed:
		case verdictForward:
			dp.outs = append(dp.outs, buf[shift:shift+m.offset+len(dp.pkt.Buf)])
		case verdictLocal:
			pkt := buf[m.offset : m.offset+size]
			if m.stack.DeliverVnet(virtio.At(buf, m.offset), pkt) != nil {
				m.drop(ReasonStackRefused)
			} else {
				m.c.local.Add(1)
			}
		}
	}
	m.flows.Unlock()
	if m.seq != nil {
		m.seqFlush() // wake the order writers once per batch
	}
	if len(dp.outs) > 0 {
		m.write(dp.outs)
	}
	// Return clone buffers to the pool.
	dp.pool.releaseAll()
}

// write writes bufs (each at m.offset) and counts them.
func (m *Middlebox) write(bufs [][]byte) {
	m.writer.Lock()
	w, _ := m.dev.Write(bufs, m.offset)
	m.writer.Unlock()
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
	m.writer.Lock()
	defer m.writer.Unlock()
	// The Stack's buffer has exactly virtio.HdrLen in front; Device.Write takes
	// one offset for the batch, so write it with the Stack's offset.
	m.writer.stackOut[0] = buf
	w, _ := m.dev.Write(m.writer.stackOut[:], offset)
	m.writer.stackOut[0] = nil
	if w == 1 {
		m.c.pktsOut.Add(1)
		m.c.bytesOut.Add(uint64(len(buf) - offset))
	} else {
		m.c.drops[ReasonWriteFailed].Add(1)
	}
}

func (m *Middlebox) drop(r Reason) { m.c.drops[r].Add(1) }
