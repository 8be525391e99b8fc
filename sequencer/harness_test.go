package sequencer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The harness is the network, as in ackmerge's: clients send their streams
// in random segments (new data and resegmented retransmissions), the path to
// the middlebox loses, duplicates and reorders them, the middlebox stamps
// each segment and queues a STAMP frame to every branch's order stream
// before forwarding the segment to every branch over lossy paths. Order
// streams are cut (frames in flight lost) and reconnected (live ranges sent
// again); the sequencer restarts from its persisted ceiling with flows
// restored from their exported state and the wall clock set back.

type simSeg struct {
	flow int
	seq  uint32
	data int // bytes
}

type simFrame struct {
	flow int
	r    Range
}

type simBranch struct {
	have    []bool   // per flow offset: bytes received
	stamp   []uint64 // per flow offset: G from the order stream (0: none)
	ack     []uint64 // per flow: cumulative ack offset
	inOrder []simFrame
	lost    [][]Range // per flow: ranges whose frames a cut lost
}

type simFlow struct {
	isn      uint32
	length   int
	sent     uint64   // highest offset the client has sent
	sentAt   []int64  // per offset: event index of the first send
	arrived  []int64  // per offset: event index of the first arrival at the middlebox (-1: none)
	truth    []uint64 // per offset: stamp handed out (0: none)
	stampAt  []int64  // per offset: event index of the stamping
	f        Flow
	mergeAck uint64
}

type sim struct {
	t        *testing.T
	rng      *rand.Rand
	ev       int64
	now      int64
	clock    *Clock
	ceiling  uint64 // "persisted"
	flows    []*simFlow
	branches []*simBranch
	net      []simSeg
	maxSeen  uint64 // largest G handed out before the last restart
	restarts int
	drops    int
}

func newSim(t *testing.T, seed uint64, nflows, nbranch int) *sim {
	s := &sim{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	s.now = 1_000_000 + s.rng.Int64N(1<<40)
	s.clock = NewClock(0, s.now, 0)
	for range nflows {
		n := 1 + s.rng.IntN(2500)
		fl := &simFlow{isn: s.rng.Uint32(), length: n, sentAt: make([]int64, n), arrived: make([]int64, n), truth: make([]uint64, n), stampAt: make([]int64, n)}
		for i := range fl.arrived {
			fl.arrived[i], fl.sentAt[i] = -1, -1
		}
		fl.f.Reset(fl.isn, 8+s.rng.IntN(64), time.Duration(s.rng.IntN(3))*time.Millisecond)
		s.flows = append(s.flows, fl)
	}
	for range nbranch {
		b := &simBranch{lost: make([][]Range, nflows), ack: make([]uint64, nflows)}
		for _, fl := range s.flows {
			b.have = append(b.have, make([]bool, fl.length)...)
			b.stamp = append(b.stamp, make([]uint64, fl.length)...)
		}
		s.branches = append(s.branches, b)
	}
	return s
}

// base returns flow k's first index in a branch's flat per-byte arrays.
func (s *sim) base(k int) int {
	n := 0
	for _, fl := range s.flows[:k] {
		n += fl.length
	}
	return n
}

func (s *sim) persist() {
	if w, ok := s.clock.Want(s.now); ok {
		s.ceiling = w
		s.clock.Persisted(w)
	}
}

// clientSend sends new bytes or a resegmented retransmission from the
// merged ack.
func (s *sim) clientSend(k int) {
	fl := s.flows[k]
	from := fl.sent
	if fl.sent == uint64(fl.length) || (fl.sent > fl.mergeAck && s.rng.IntN(3) == 0) {
		from = fl.mergeAck + uint64(s.rng.IntN(int(fl.sent-fl.mergeAck)+1))
	}
	if from >= uint64(fl.length) {
		return
	}
	n := 1 + s.rng.IntN(min(900, fl.length-int(from)))
	for o := from; o < from+uint64(n); o++ {
		if fl.sentAt[o] < 0 {
			fl.sentAt[o] = s.ev
		}
	}
	fl.sent = max(fl.sent, from+uint64(n))
	s.net = append(s.net, simSeg{flow: k, seq: fl.isn + 1 + uint32(from), data: n})
}

// arrive is the middlebox receiving a client segment.
func (s *sim) arrive(sg simSeg) {
	fl := s.flows[sg.flow]
	from := uint64(sg.seq - fl.isn - 1)
	r, stamped, err := fl.f.Observe(sg.seq, sg.data, s.clock, s.now)
	if err != nil {
		s.drops++ // not stamped: not forwarded
		return
	}
	for o := from; o < from+uint64(sg.data); o++ {
		if fl.arrived[o] < 0 {
			fl.arrived[o] = s.ev
		}
	}
	if stamped {
		if r.G <= s.maxSeen {
			s.t.Fatalf("G %d went back (<= %d handed out before a restart)", r.G, s.maxSeen)
		}
		for o := r.Start; o < r.End; o++ {
			if fl.truth[o] != 0 {
				s.t.Fatalf("flow %d byte %d stamped twice (%d then %d)", sg.flow, o, fl.truth[o], r.G)
			}
			fl.truth[o], fl.stampAt[o] = r.G, s.ev
		}
		for _, b := range s.branches {
			b.inOrder = append(b.inOrder, simFrame{sg.flow, r})
		}
	}
	base := s.base(sg.flow)
	for _, b := range s.branches {
		if s.rng.IntN(5) == 0 {
			continue // lost on this branch's path
		}
		for o := from; o < from+uint64(sg.data); o++ {
			b.have[base+int(o)] = true
		}
		a := b.ack[sg.flow]
		for a < uint64(fl.length) && b.have[base+int(a)] {
			a++
		}
		b.ack[sg.flow] = a
	}
	m := uint64(fl.length)
	for _, b := range s.branches {
		m = min(m, b.ack[sg.flow])
	}
	if m > fl.mergeAck {
		fl.mergeAck = m
		fl.f.Ack(fl.isn+1+uint32(m), s.now)
	}
}

// deliverOrder delivers branch b's next frame in order.
func (s *sim) deliverOrder(b *simBranch) {
	if len(b.inOrder) == 0 {
		return
	}
	fr := b.inOrder[0]
	b.inOrder = b.inOrder[1:]
	base := s.base(fr.flow)
	for o := fr.r.Start; o < fr.r.End; o++ {
		if g := b.stamp[base+int(o)]; g != 0 && g != fr.r.G {
			s.t.Fatalf("branch got two stamps for flow %d byte %d: %d, %d", fr.flow, o, g, fr.r.G)
		}
		b.stamp[base+int(o)] = fr.r.G
	}
}

// cut loses branch b's frames in flight and reconnects: the live ranges of
// every flow are sent again.
func (s *sim) cut(b *simBranch) {
	for _, fr := range b.inOrder {
		b.lost[fr.flow] = append(b.lost[fr.flow], fr.r)
	}
	b.inOrder = b.inOrder[:0]
	for k, fl := range s.flows {
		for _, r := range fl.f.Ranges() {
			b.inOrder = append(b.inOrder, simFrame{k, r})
		}
	}
}

// restart replaces the clock by one loaded from the persisted ceiling, with
// the wall clock set back, and restores every flow from its exported state.
func (s *sim) restart() {
	s.maxSeen = s.clock.Last()
	s.now -= s.rng.Int64N(1 << 32)
	s.clock = NewClock(s.ceiling, s.now, 0)
	for _, fl := range s.flows {
		st := fl.f.Export()
		fl.f = Flow{}
		fl.f.Restore(st, 8+s.rng.IntN(64), time.Duration(s.rng.IntN(3))*time.Millisecond)
	}
	s.restarts++
}

func (s *sim) step() {
	s.ev++
	s.now += s.rng.Int64N(3000)
	switch x := s.rng.IntN(100); {
	case x < 30:
		s.clientSend(s.rng.IntN(len(s.flows)))
	case x < 70 && len(s.net) > 0:
		i := s.rng.IntN(len(s.net)) // reordering
		sg := s.net[i]
		if s.rng.IntN(6) != 0 { // else duplicated: stays in flight
			s.net = slices.Delete(s.net, i, i+1)
		}
		if s.rng.IntN(8) != 0 { // else lost
			s.arrive(sg)
		}
	case x < 90:
		s.deliverOrder(s.branches[s.rng.IntN(len(s.branches))])
	case x < 96:
		s.persist()
	case x < 98:
		s.cut(s.branches[s.rng.IntN(len(s.branches))])
	case x < 99:
		s.persist()
		s.restart()
	default:
		s.now -= s.rng.Int64N(1 << 20) // wall clock steps back
	}
}

func (s *sim) done() bool {
	for _, fl := range s.flows {
		if fl.mergeAck < uint64(fl.length) {
			return false
		}
	}
	for _, b := range s.branches {
		if len(b.inOrder) > 0 {
			return false
		}
	}
	return true
}

func (s *sim) check() {
	t := s.t
	// Every byte was stamped, at or before its first arrival, in stream
	// order, and no later than any byte its client sent afterwards.
	type stamped struct {
		g      uint64
		sentAt int64
		arrive int64
	}
	var all []stamped
	for k, fl := range s.flows {
		for o := range fl.length {
			g := fl.truth[o]
			if g == 0 {
				t.Fatalf("flow %d byte %d never stamped", k, o)
			}
			if fl.stampAt[o] > fl.arrived[o] {
				t.Fatalf("flow %d byte %d stamped (event %d) after its first arrival (%d)", k, o, fl.stampAt[o], fl.arrived[o])
			}
			if o > 0 && g < fl.truth[o-1] {
				t.Fatalf("flow %d: stamp of byte %d (%d) below byte %d's (%d)", k, o, g, o-1, fl.truth[o-1])
			}
			all = append(all, stamped{g, fl.sentAt[o], fl.arrived[o]})
		}
		fl.f.Ack(fl.isn+1+uint32(fl.length), int64(s.clock.Last())+int64(time.Second))
		if len(fl.f.Ranges()) != 0 {
			t.Fatalf("flow %d keeps %d ranges after every branch acknowledged everything", k, len(fl.f.Ranges()))
		}
	}
	// Real-time order across flows: a byte first sent after another byte
	// first reached the middlebox has a larger stamp.
	slices.SortFunc(all, func(a, b stamped) int { return int(a.arrive - b.arrive) })
	var maxG uint64
	j := 0
	bySend := slices.Clone(all)
	slices.SortFunc(bySend, func(a, b stamped) int { return int(a.sentAt - b.sentAt) })
	for _, x := range bySend {
		for j < len(all) && all[j].arrive < x.sentAt {
			maxG = max(maxG, all[j].g)
			j++
		}
		if x.g <= maxG {
			t.Fatalf("a byte first sent at event %d has stamp %d, not above %d of a byte that arrived before", x.sentAt, x.g, maxG)
		}
	}
	// Every branch holds, for every byte, the true stamp, unless a cut lost
	// its frame after every branch had acknowledged the byte.
	for bi, b := range s.branches {
		for k, fl := range s.flows {
			base := s.base(k)
			for o := range fl.length {
				g := b.stamp[base+o]
				if g == fl.truth[o] {
					continue
				}
				if g != 0 {
					t.Fatalf("branch %d flow %d byte %d: stamp %d, true %d", bi, k, o, g, fl.truth[o])
				}
				if !inRanges(b.lost[k], uint64(o)) {
					t.Fatalf("branch %d flow %d byte %d: no stamp, and no cut lost it", bi, k, o)
				}
			}
		}
	}
}

func inRanges(rs []Range, o uint64) bool {
	for _, r := range rs {
		if o >= r.Start && o < r.End {
			return true
		}
	}
	return false
}

func TestStampProperties(t *testing.T) {
	seeds := 150
	if testing.Short() {
		seeds = 40
	}
	restarts, drops := 0, 0
	for seed := range uint64(seeds) {
		nb := 1 + int(seed%6)
		nf := 1 + int(seed/6%3)
		t.Run(fmt.Sprintf("seed=%d/branches=%d/flows=%d", seed, nb, nf), func(t *testing.T) {
			s := newSim(t, seed, nf, nb)
			s.persist()
			for i := 0; !s.done(); i++ {
				if i > 2_000_000 {
					t.Fatal("no progress")
				}
				s.step()
			}
			s.check()
			restarts += s.restarts
			drops += s.drops
		})
	}
	// The harness must have exercised what it claims to.
	if restarts == 0 || drops == 0 {
		t.Fatalf("harness too gentle: %d restarts, %d refused segments", restarts, drops)
	}
}
