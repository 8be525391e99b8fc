package failover

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// The simulation is the network of the paper's topology, reduced: a
// middlebox next to the client sees every client segment; each DC's link
// loses packets at random (or everything, once cut). Probes run every
// 100 ms per node; clients run request/acknowledge loops with TCP's
// retransmission timer and exponential backoff; one client is forked to a
// near and a far node and reports branch ack lag. Time is simulated.

type simEvent struct {
	at time.Duration
	fn func()
}

type eventQueue []simEvent

func (q eventQueue) Len() int           { return len(q) }
func (q eventQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q eventQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)        { *q = append(*q, x.(simEvent)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type simConfig struct {
	mode       Mode
	perDC      int
	loss       float64       // per packet, each direction
	probes     bool          // run active probes
	probeEvery time.Duration // probe interval
	flowsPerN  int           // anycast-like flows per node
	forked     bool          // a forked client on n0 and the first dublin node
	duration   time.Duration
	cutAt      time.Duration // sydney cut at this time (0: never)
	healAt     time.Duration // sydney healed at this time (0: never)
	dcRTT      [2]time.Duration
	minRTO     time.Duration
	probeMinTO time.Duration
	seed       uint64
}

type sim struct {
	cfg   simConfig
	d     *Detector[int]
	rng   *rand.Rand
	now   time.Duration
	q     eventQueue
	log   []Transition
	nodes int
}

func newSim(t testing.TB, sc simConfig) *sim {
	d, err := New[int](Config{Mode: sc.mode, MinRTO: sc.minRTO}, testTopo(sc.perDC))
	if err != nil {
		t.Fatal(err)
	}
	return &sim{cfg: sc, d: d, rng: rand.New(rand.NewPCG(sc.seed, 77)), nodes: 2 * sc.perDC}
}

func (s *sim) at(delay time.Duration, fn func()) {
	heap.Push(&s.q, simEvent{at: s.now + delay, fn: fn})
}

func (s *sim) dcOf(n NodeID) DCID { return DCID(int(n) / s.cfg.perDC) }

func (s *sim) cut(dc DCID) bool {
	return dc == 0 && s.cfg.cutAt > 0 && s.now >= s.cfg.cutAt && (s.cfg.healAt == 0 || s.now < s.cfg.healAt)
}

// lost says whether a packet crossing dc's link now is lost.
func (s *sim) lost(dc DCID) bool {
	return s.cut(dc) || s.rng.Float64() < s.cfg.loss
}

// rtt with a little jitter.
func (s *sim) rtt(dc DCID) time.Duration {
	base := s.cfg.dcRTT[dc]
	return base + time.Duration(s.rng.Float64()*0.1*float64(base))
}

func (s *sim) collect(ds []Decision) {
	for _, dec := range ds {
		s.log = append(s.log, Transition{At: t0.Add(s.now), Decision: dec})
	}
}

func (s *sim) run() {
	for s.q.Len() > 0 {
		e := heap.Pop(&s.q).(simEvent)
		if e.at > s.cfg.duration {
			return
		}
		s.now = e.at
		e.fn()
	}
}

// startProbes probes node n every probeEvery; a lost request or reply is
// a miss reported at the prober's timeout (250 ms + 2*RTT), like a fresh
// TCP connect whose SYN or SYN-ACK is lost.
func (s *sim) startProbes(n NodeID) {
	dc := s.dcOf(n)
	timeout := s.cfg.probeMinTO + 2*s.cfg.dcRTT[dc]
	var probe func()
	probe = func() {
		if reqLost := s.lost(dc); reqLost || s.lost(dc) { // the request, else the reply
			s.at(timeout, func() { s.collect(s.d.Probe(t0.Add(s.now), n, ProbeResult{})) })
		} else {
			r := s.rtt(dc)
			s.at(r, func() { s.collect(s.d.Probe(t0.Add(s.now), n, ProbeResult{OK: true, Ready: true, RTT: r})) })
		}
		s.at(s.cfg.probeEvery, probe)
	}
	s.at(time.Duration(s.rng.Int64N(int64(s.cfg.probeEvery))), probe)
}

// simFlow is a client that sends one 100-byte request at a time on
// len(nodes) branches and waits for every branch's acknowledgement,
// retransmitting with exponential backoff.
type simFlow struct {
	s      *sim
	id     int
	nodes  []NodeID
	seq    uint32
	acked  []uint32
	ackAt  []time.Duration
	lagged []bool
	gen    int
	rto    time.Duration
}

func (s *sim) startFlow(id int, nodes ...NodeID) {
	f := &simFlow{s: s, id: id, nodes: nodes, seq: 1000, acked: make([]uint32, len(nodes)),
		ackAt: make([]time.Duration, len(nodes)), lagged: make([]bool, len(nodes))}
	var maxRTT time.Duration
	for i, n := range nodes {
		f.acked[i] = f.seq
		maxRTT = max(maxRTT, s.cfg.dcRTT[s.dcOf(n)])
	}
	f.rto = maxRTT + s.cfg.minRTO
	s.at(time.Duration(s.rng.Int64N(int64(50*time.Millisecond))), func() { f.send(false, 0) })
}

func (f *simFlow) key(b int) int { return f.id*10 + b }

func (f *simFlow) send(retrans bool, backoff int) {
	s := f.s
	f.gen++
	gen := f.gen
	end := f.seq + 100
	for b, n := range f.nodes {
		if f.acked[b] >= end {
			continue // this branch already has it; only the client's timer fired
		}
		s.collect(s.d.ClientSegment(t0.Add(s.now), f.key(b), n, Segment{Seq: seqnum.Value(f.seq), Len: 100, Flags: header.TCPFlagAck}))
		dc := s.dcOf(n)
		if s.lost(dc) { // request lost on the DC link
			continue
		}
		r := s.rtt(dc)
		b, n := b, n
		s.at(r, func() {
			if s.lost(dc) { // acknowledgement lost on the way back
				return
			}
			s.collect(s.d.ServerSegment(t0.Add(s.now), f.key(b), n, Segment{Ack: seqnum.Value(end), Flags: header.TCPFlagAck}))
			f.onAck(b, end)
		})
	}
	s.at(f.rto<<backoff, func() {
		if f.gen == gen && f.minAcked() < end {
			f.send(true, min(backoff+1, 6))
		}
	})
}

func (f *simFlow) minAcked() uint32 {
	m := f.acked[0]
	for _, a := range f.acked[1:] {
		m = min(m, a)
	}
	return m
}

func (f *simFlow) onAck(b int, ack uint32) {
	s := f.s
	if ack <= f.acked[b] {
		return
	}
	f.acked[b] = ack
	f.ackAt[b] = s.now
	if len(f.nodes) > 1 {
		// Branch lag: a branch behind the highest ack lags since that ack.
		top, topAt := f.acked[0], f.ackAt[0]
		for i := range f.nodes {
			if f.acked[i] > top || (f.acked[i] == top && f.ackAt[i] < topAt) {
				top, topAt = f.acked[i], f.ackAt[i]
			}
		}
		for i, n := range f.nodes {
			behind := f.acked[i] < top
			if behind != f.lagged[i] {
				since := time.Time{}
				if behind {
					since = t0.Add(topAt)
				}
				s.collect(s.d.BranchLag(t0.Add(s.now), f.key(i), n, since))
				f.lagged[i] = behind
			}
		}
	}
	if f.minAcked() >= f.seq+100 {
		f.seq += 100
		f.gen++
		think := time.Duration(s.rng.Int64N(int64(30 * time.Millisecond)))
		s.at(think, func() { f.send(false, 0) })
	}
}

func (s *sim) start() {
	if s.cfg.probes {
		for n := 0; n < s.nodes; n++ {
			s.startProbes(NodeID(n))
		}
	}
	id := 1
	for n := 0; n < s.nodes; n++ {
		for k := 0; k < s.cfg.flowsPerN; k++ {
			s.startFlow(id, NodeID(n))
			id++
		}
	}
	if s.cfg.forked {
		s.startFlow(id, 0, NodeID(s.cfg.perDC))
	}
	var tick func()
	tick = func() {
		s.collect(s.d.Tick(t0.Add(s.now)))
		s.at(10*time.Millisecond, tick)
	}
	s.at(10*time.Millisecond, tick)
}

func defaultSim(seed uint64) simConfig {
	return simConfig{
		mode: Fast, perDC: 3, loss: 0.01, probes: true, probeEvery: 100 * time.Millisecond,
		flowsPerN: 2, forked: true, duration: 5 * time.Minute,
		dcRTT:  [2]time.Duration{10 * time.Millisecond, 340 * time.Millisecond},
		minRTO: 200 * time.Millisecond, probeMinTO: 250 * time.Millisecond, seed: seed,
	}
}

// TestNoDetectionUnderRandomLoss: 1% random loss of probes, requests and
// server packets on live links, for 5 simulated minutes per seed, makes
// no NodeDown, in fast mode (all signals) and in paper mode.
func TestNoDetectionUnderRandomLoss(t *testing.T) {
	for _, mode := range []Mode{Fast, Paper} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("%v/seed=%d", mode, seed), func(t *testing.T) {
				sc := defaultSim(seed)
				sc.mode = mode
				s := newSim(t, sc)
				s.start()
				s.run()
				st := s.d.Stats()
				if len(s.log) != 0 {
					t.Fatalf("a lossy but live network produced transitions: %+v", s.log)
				}
				if st.Probes < 10000 || st.ClientSegments < 10000 || st.ServerSegments < 10000 {
					t.Fatalf("the simulation did too little: %+v", st)
				}
				if mode == Fast && st.Duplicates == 0 {
					t.Fatalf("no retransmission at 1%% loss: the loss model is not working (%+v)", st)
				}
				checkInvariants(t, s.d)
			})
		}
	}
}

// TestCutDetectedFast: cutting sydney's link (all 3 nodes) is detected,
// sydney goes down and dublin becomes preferred within 1 s in fast mode,
// at a 100 ms probe interval, whatever the phase of the cut. Dublin, lossy
// but live, never goes down.
func TestCutDetectedFast(t *testing.T) {
	var worst time.Duration
	for seed := uint64(1); seed <= 20; seed++ {
		sc := defaultSim(seed)
		sc.duration = 20 * time.Second
		sc.cutAt = 10*time.Second + time.Duration(seed)*7*time.Millisecond
		s := newSim(t, sc)
		s.start()
		s.run()
		var dcDown time.Duration = -1
		for _, tr := range s.log {
			if tr.Kind == NodeDown && tr.DC != 0 {
				t.Fatalf("seed %d: dublin node went down: %+v", seed, tr)
			}
			if tr.At.Sub(t0) < sc.cutAt {
				t.Fatalf("seed %d: transition before the cut: %+v", seed, tr)
			}
			if tr.Kind == DCDown && tr.DC == 0 && dcDown < 0 {
				dcDown = tr.At.Sub(t0) - sc.cutAt
			}
		}
		if dcDown < 0 {
			t.Fatalf("seed %d: the cut was never detected: %+v", seed, s.log)
		}
		if dcDown > time.Second {
			t.Errorf("seed %d: cut detected after %v, want under 1 s", seed, dcDown)
		}
		if dc, _ := s.d.PreferredDC(); dc != 1 {
			t.Errorf("seed %d: preferred DC %d after the cut, want dublin", seed, dc)
		}
		worst = max(worst, dcDown)
		checkInvariants(t, s.d)
	}
	t.Logf("fast mode: worst detection of a cut DC over 20 cut phases: %v", worst)
}

// TestCutDetectedSingleNodeDC: with one node per DC the correlated rule
// cannot apply; the per-node probe rule still detects the cut within 1 s.
func TestCutDetectedSingleNodeDC(t *testing.T) {
	var worst time.Duration
	for seed := uint64(1); seed <= 10; seed++ {
		sc := defaultSim(seed)
		sc.perDC = 1
		sc.duration = 15 * time.Second
		sc.cutAt = 10*time.Second + time.Duration(seed)*9*time.Millisecond
		s := newSim(t, sc)
		s.start()
		s.run()
		if len(s.log) == 0 || s.log[0].Kind != NodeDown || s.log[0].Node != 0 {
			t.Fatalf("seed %d: transitions %+v", seed, s.log)
		}
		det := s.log[0].At.Sub(t0) - sc.cutAt
		if det < 0 || det > time.Second {
			t.Errorf("seed %d: detected after %v, want under 1 s", seed, det)
		}
		worst = max(worst, det)
	}
	t.Logf("fast mode, one node per DC: worst detection %v", worst)
}

// TestPassiveSignalsDetectCutWithoutProbes: with probes off and a single
// client flow (the paper's Fig. 6 setting), the silence rule alone takes
// the cut DC down in about a second at 10 ms RTT, while Algorithm 1 alone
// (paper mode) waits for the 5th retransmission: 31 RTOs. (With many
// concurrent flows Algorithm 1 is faster: its count is per server, summed
// over flows.)
func TestPassiveSignalsDetectCutWithoutProbes(t *testing.T) {
	detect := func(mode Mode) time.Duration {
		sc := defaultSim(5)
		sc.mode = mode
		sc.probes = false
		sc.perDC = 1
		sc.flowsPerN = 1
		sc.forked = false
		sc.loss = 0
		sc.duration = 60 * time.Second
		sc.cutAt = 5 * time.Second
		s := newSim(t, sc)
		s.start()
		s.run()
		for _, tr := range s.log {
			if tr.Kind == NodeDown && tr.Node == 0 {
				return tr.At.Sub(t0) - sc.cutAt
			}
		}
		t.Fatalf("%v: cut never detected: %+v", mode, s.log)
		return 0
	}
	fast, paper := detect(Fast), detect(Paper)
	t.Logf("cut detection without probes: fast %v, paper %v", fast, paper)
	if fast > 2*time.Second {
		t.Errorf("passive fast signals took %v", fast)
	}
	// The client's RTO is 210 ms: the 5th retransmission leaves 31 RTOs
	// after the last packet that got through.
	if paper < 25*210*time.Millisecond || paper > 32*210*time.Millisecond {
		t.Errorf("paper mode detected after %v, want about 31 RTOs (6.5 s)", paper)
	}
	if paper < 3*fast {
		t.Errorf("paper mode (%v) is not much slower than fast mode (%v)", paper, fast)
	}
}

// TestNoFlappingAfterHeal: cut, then heal under 1% loss: sydney comes back
// exactly once, after ReadmitAfter of ready probes, and stays up.
func TestNoFlappingAfterHeal(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		sc := defaultSim(seed)
		sc.duration = 3 * time.Minute
		sc.cutAt = 20 * time.Second
		sc.healAt = 40 * time.Second
		s := newSim(t, sc)
		s.start()
		s.run()
		var downs, ups int
		var dcUp time.Duration
		for _, tr := range s.log {
			switch tr.Kind {
			case DCDown:
				downs++
			case DCUp:
				ups++
				dcUp = tr.At.Sub(t0)
			}
		}
		if downs != 1 || ups != 1 {
			t.Fatalf("seed %d: %d DCDown and %d DCUp, want exactly one each: %+v", seed, downs, ups, s.log)
		}
		if dcUp < sc.healAt+2*time.Second {
			t.Fatalf("seed %d: readmitted %v after the heal, before ReadmitAfter", seed, dcUp-sc.healAt)
		}
		for n := NodeID(0); n < 3; n++ {
			if !s.d.NodeUp(n) {
				t.Errorf("seed %d: node %d still down at the end", seed, n)
			}
		}
		if last := s.log[len(s.log)-1].At.Sub(t0); last > sc.healAt+10*time.Second {
			t.Errorf("seed %d: a transition at %v, long after the heal: %+v", seed, last, s.log)
		}
		checkInvariants(t, s.d)
	}
}
