package middlebox

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/sequencer"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// sequencing is the middlebox side of the sequencer: the clock, one
// stamper per sequenced forked flow and one order stream per node. clock,
// flows and on are guarded by Middlebox.flows (the data path holds it per
// batch); each orderConn guards its own queue.
type sequencing struct {
	cfg   SequencingConfig
	port  [65536]bool // sequenced ports
	file  sequencer.CeilingFile
	epoch uint64

	clock *sequencer.Clock // under Middlebox.flows
	flows []sequencer.Flow // parallel to the flow table's slab, under Middlebox.flows
	on    []bool           // flow i is sequenced, under Middlebox.flows
	conns []*orderConn     // by global node index
	frame orderwire.Frame  // scratch, under Middlebox.flows

	stamped     atomic.Uint64 // segments that got a new stamp
	refused     atomic.Uint64 // segments dropped: no stamp could be given
	persistErrs atomic.Uint64 // ceiling writes that failed

	wake   chan struct{} // wakes the persister
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startSequencing loads the clock's ceiling, persists the first
// reservation (so no position is handed out before it is durable) and
// starts the persister and one order stream per node.
func (m *Middlebox) startSequencing() error {
	cfg := *m.cfg.Sequencing
	s := &sequencing{cfg: cfg, file: sequencer.CeilingFile{Path: cfg.StatePath}, wake: make(chan struct{}, 1)}
	for _, p := range cfg.Ports {
		s.port[p] = true
	}
	stored, err := s.file.Load()
	if err != nil {
		return err
	}
	now := m.cfg.Now().UnixNano()
	s.clock = sequencer.NewClock(stored, now, cfg.Lead)
	if w, ok := s.clock.Want(now); ok {
		if err := s.file.Store(w); err != nil {
			return err
		}
		s.clock.Persisted(w)
	}
	var e [8]byte
	rand.Read(e[:])
	s.epoch = binary.BigEndian.Uint64(e[:])
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for i, n := range m.nodes {
		addr := net.JoinHostPort(n.ap.Addr().String(), strconv.Itoa(int(cfg.OrderPort)))
		if cfg.OrderAddr != nil {
			addr = cfg.OrderAddr(n.ap)
		}
		o := newOrderConn(uint16(i), addr, cfg.QueueBytes, cfg.Secret, m.log, m.orderResync, now)
		o.now = func() int64 { return m.cfg.Now().UnixNano() }
		if m.life != nil {
			o.progress, o.downHook = m.lifeProgress, m.lifeOrderDown
		}
		s.conns = append(s.conns, o)
	}
	m.seq = s
	m.log.Info("sequencer started", "floor", s.clock.Last(), "ceiling", s.clock.Ceiling(), "state", cfg.StatePath, "epoch", s.epoch)
	for _, o := range s.conns {
		s.wg.Go(func() { o.run(ctx) })
	}
	s.wg.Go(func() { m.persister(ctx) })
	return nil
}

func (m *Middlebox) stopSequencing() {
	if m.seq != nil {
		m.seq.cancel()
		m.seq.wg.Wait()
	}
}

// persister keeps the clock's persisted ceiling ahead of it: the file
// write and fsync happen here, never on the data path.
func (m *Middlebox) persister(ctx context.Context) {
	s := m.seq
	t := time.NewTicker(s.cfg.leadOrDefault() / 8)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
		m.flows.Lock()
		w, ok := s.clock.Want(m.cfg.Now().UnixNano())
		m.flows.Unlock()
		if !ok {
			continue
		}
		if err := s.file.Store(w); err != nil {
			s.persistErrs.Add(1)
			m.log.Error("sequencer ceiling not persisted: stamping stops at the old ceiling", "err", err)
			continue
		}
		m.flows.Lock()
		s.clock.Persisted(w)
		m.flows.Unlock()
	}
}

func (c SequencingConfig) leadOrDefault() time.Duration {
	if c.Lead > 0 {
		return c.Lead
	}
	return sequencer.DefaultLead
}

// flowOf is flow i's order-stream name at node n.
func (m *Middlebox) flowOf(f *flow, n *node) orderwire.Flow {
	return orderwire.Flow{ClientIP: f.key.cli, ClientPort: f.key.cport, NodePort: n.key.port}
}

// seqOpen makes new forked flow i sequenced if its port is, and queues
// OPEN to its nodes (before its SYN is forked). Called with flows held.
func (m *Middlebox) seqOpen(i int32) {
	s := m.seq
	f := &m.flows.tab.slab[i]
	if !s.port[f.key.vport] {
		return
	}
	for int(i) >= len(s.flows) {
		s.flows = append(s.flows, sequencer.Flow{})
		s.on = append(s.on, false)
	}
	s.flows[i].Reset(f.cliISS, 0, -1)
	s.on[i] = true
	for j := range int(f.nbranch) {
		n := m.nodes[f.nodes[j]]
		s.frame = orderwire.Frame{Type: orderwire.Open, Flow: m.flowOf(f, n)}
		s.conns[f.nodes[j]].push(&s.frame)
	}
}

// seqStamp stamps the new bytes of client segment p of flow i and queues
// the STAMP to the flow's live branches. It reports false if the segment
// must be dropped because no stamp could be given (the clock's ceiling is
// not persisted yet, or too many ranges are unacknowledged). Called with
// flows held, before the segment is forwarded; does not allocate.
func (m *Middlebox) seqStamp(i int32, p *packet.TCP, now int64) bool {
	s := m.seq
	if int(i) >= len(s.on) || !s.on[i] {
		return true
	}
	n := p.PayloadLen()
	if n == 0 {
		return true
	}
	f := &m.flows.tab.slab[i]
	sf := &s.flows[i]
	cb, _ := f.fork.Acked()
	sf.Ack(f.cliISS+1+cb, now)
	r, ok, err := sf.Observe(p.Seq(), n, s.clock, now)
	if err != nil {
		s.refused.Add(1)
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return false
	}
	if !ok {
		return true
	}
	s.stamped.Add(1)
	for j := range int(f.nbranch) {
		if f.gone&(1<<j) != 0 {
			continue
		}
		nd := m.nodes[f.nodes[j]]
		s.frame = orderwire.Frame{Type: orderwire.Stamp, Flow: m.flowOf(f, nd), Start: r.Start, End: r.End, G: r.G}
		s.conns[f.nodes[j]].push(&s.frame)
	}
	return true
}

// seqFlush wakes the order writers that have frames queued; the data path
// calls it once per batch, after releasing flows.
func (m *Middlebox) seqFlush() {
	for _, o := range m.seq.conns {
		o.flush()
	}
}

// seqUnreachable reports whether branch j of sequenced flow i must be
// removed because its node's order stream has been down longer than
// OrderDownTimeout: the node cannot get the flow's stamps, and would fail
// its writes. Under flows (timer pass).
func (m *Middlebox) seqUnreachable(i int32, j int, now time.Time) bool {
	s := m.seq
	if s == nil || int(i) >= len(s.on) || !s.on[i] {
		return false
	}
	d := s.conns[m.flows.tab.slab[i].nodes[j]].down.Load()
	return d != 0 && now.UnixNano()-d > int64(s.cfg.OrderDownTimeout)
}

// seqClose queues CLOSE for flow i, which is being removed, and wakes the
// writers (flows are also removed by timers, outside a batch). Called
// with flows held.
func (m *Middlebox) seqClose(i int32) {
	s := m.seq
	if int(i) >= len(s.on) || !s.on[i] {
		return
	}
	s.on[i] = false
	f := &m.flows.tab.slab[i]
	for j := range int(f.nbranch) {
		if f.gone&(1<<j) != 0 {
			continue
		}
		n := m.nodes[f.nodes[j]]
		s.frame = orderwire.Frame{Type: orderwire.Close, Flow: m.flowOf(f, n)}
		s.conns[f.nodes[j]].push(&s.frame)
		s.conns[f.nodes[j]].flush()
	}
}

// orderResync replaces o's queue by HELLO, then OPEN and the
// unacknowledged STAMPs of every live sequenced flow served by o's node,
// and makes o live: a reconnected node learns every stamp it may still
// need, and frames from the data path follow in order.
func (m *Middlebox) orderResync(o *orderConn) {
	s := m.seq
	m.flows.Lock()
	defer m.flows.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.q = o.q[:0]
	now := m.cfg.Now().UnixNano()
	fr := orderwire.Frame{Type: orderwire.Hello, Epoch: s.epoch, GFloor: s.clock.Last()}
	o.appendLocked(&fr)
	for i := range s.on {
		if !s.on[i] {
			continue
		}
		f := &m.flows.tab.slab[i]
		for j := range int(f.nbranch) {
			if f.nodes[j] != o.node || f.gone&(1<<j) != 0 {
				continue
			}
			fl := m.flowOf(f, m.nodes[o.node])
			fr = orderwire.Frame{Type: orderwire.Open, Flow: fl}
			o.appendLocked(&fr)
			sf := &s.flows[i]
			cb, _ := f.fork.Acked()
			sf.Ack(f.cliISS+1+cb, now)
			for _, r := range sf.Ranges() {
				fr = orderwire.Frame{Type: orderwire.Stamp, Flow: fl, Start: r.Start, End: r.End, G: r.G}
				o.appendLocked(&fr)
			}
		}
	}
	o.live, o.over = true, false
}

// SequencerInfo is the sequencer's state for /dcs and tests.
type SequencerInfo struct {
	Epoch   uint64 `json:"epoch"`
	LastG   uint64 `json:"last_g"`
	Ceiling uint64 `json:"ceiling"`
	Stamped uint64 `json:"segments_stamped"`
	Refused uint64 `json:"segments_refused"`
}

// Sequencer returns the sequencer's state, and false without sequencing.
func (m *Middlebox) Sequencer() (SequencerInfo, bool) {
	s := m.seq
	if s == nil {
		return SequencerInfo{}, false
	}
	m.flows.Lock()
	defer m.flows.Unlock()
	return SequencerInfo{Epoch: s.epoch, LastG: s.clock.Last(), Ceiling: s.clock.Ceiling(), Stamped: s.stamped.Load(), Refused: s.refused.Load()}, true
}

// SequencedFlow is one sequenced flow's stamper state, for a restarted or
// standby sequencer that takes the flow over.
type SequencedFlow struct {
	Client  netip.AddrPort
	VIPPort uint16
	State   sequencer.FlowState
}

// SequencerState is the sequencer's exportable state: the clock's last
// position and persisted ceiling, and every sequenced flow's stamper.
type SequencerState struct {
	Epoch   uint64
	LastG   uint64
	Ceiling uint64
	Flows   []SequencedFlow
}

// ExportSequencer returns the sequencer's state, and false without
// sequencing. It copies every retained range: meant for handover, not for
// frequent polling.
func (m *Middlebox) ExportSequencer() (SequencerState, bool) {
	s := m.seq
	if s == nil {
		return SequencerState{}, false
	}
	m.flows.Lock()
	defer m.flows.Unlock()
	st := SequencerState{Epoch: s.epoch, LastG: s.clock.Last(), Ceiling: s.clock.Ceiling()}
	for i, on := range s.on {
		if !on {
			continue
		}
		f := &m.flows.tab.slab[i]
		st.Flows = append(st.Flows, SequencedFlow{
			Client:  netip.AddrPortFrom(netip.AddrFrom4(f.key.cli), f.key.cport),
			VIPPort: f.key.vport,
			State:   s.flows[i].Export(),
		})
	}
	return st, true
}

// OrderInfo is one node's order stream.
type OrderInfo struct {
	Up       bool   `json:"order_up"`
	AppliedG uint64 `json:"applied_g"`
}

// orderInfo returns node ni's order-stream state.
func (m *Middlebox) orderInfo(ni uint16) *OrderInfo {
	if m.seq == nil {
		return nil
	}
	o := m.seq.conns[ni]
	return &OrderInfo{Up: o.up.Load(), AppliedG: o.applied.Load()}
}

// dcAppliedG is the highest G applied by any node of DC d (0 without
// sequencing or reports).
func (m *Middlebox) dcAppliedG(d int) uint64 {
	var g uint64
	if m.seq != nil {
		for _, ni := range m.dcNode[d] {
			g = max(g, m.seq.conns[ni].applied.Load())
		}
	}
	return g
}
