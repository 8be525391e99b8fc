package failover

import (
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// FuzzDetector feeds random observation sequences (5 bytes per step) and
// checks the invariants after every step:
//   - a DC is up iff it has a live node, and DC decisions agree with it;
//   - decisions alternate per node and per DC (never Down twice, never Up
//     while up), and the state queries agree with the last decision;
//   - in paper mode only Algorithm 1 takes a node down;
//   - in safe mode passive evidence never takes the last live DC down, and
//     one client alone (mode bit 8) never takes a node down passively;
//   - the clock never goes backwards, whatever now the caller passes.
func FuzzDetector(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s.mode, s.ops)
	}
	f.Fuzz(func(t *testing.T, mode byte, ops []byte) { fuzzRun(t, mode, ops) })
}

// fuzzRun runs one fuzz input and returns the number of decisions taken.
func fuzzRun(t *testing.T, mode byte, ops []byte) int {
	cfg := Config{Mode: Mode(mode % 2), ReadmitAfter: 300 * time.Millisecond, MaxFlows: 6, History: 8}
	if mode&2 != 0 {
		cfg.StartDown = true
	}
	if mode&4 != 0 {
		cfg.Mode = Safe
	}
	oneClient := mode&8 != 0
	const perDC = 2
	d, err := New[uint8](cfg, testTopo(perDC))
	if err != nil {
		t.Fatal(err)
	}
	nodes := d.NumNodes()
	up := make([]bool, nodes)
	dcUp := make([]bool, d.NumDCs())
	for i := range up {
		up[i] = !cfg.StartDown
	}
	for i := range dcUp {
		dcUp[i] = !cfg.StartDown
	}
	clock := t0
	decisions := 0
	lastNow := d.Now()
	var lastAt time.Time
	for len(ops) >= 5 {
		op, nb, flow, arg, dt := ops[0], ops[1], ops[2]%8, ops[3], ops[4]
		ops = ops[5:]
		// dt: mostly forward in 10 ms steps; 250-255 go backwards.
		if dt >= 250 {
			clock = clock.Add(-time.Duration(dt-249) * 100 * time.Millisecond)
		} else {
			clock = clock.Add(time.Duration(dt) * 10 * time.Millisecond)
		}
		node := NodeID(int(nb)%(nodes+2) - 1) // includes -1 and nodes: bad input
		var got []Decision
		switch op % 7 {
		case 0:
			seg := Segment{Seq: seqnum.Value(uint32(arg) * 100), Len: int(arg % 3 * 50), Flags: header.TCPFlags(arg>>5) & (header.TCPFlagSyn | header.TCPFlagFin | header.TCPFlagRst)}
			seg.Client = netip.AddrFrom4([4]byte{10, 9, 0, flow % 3})
			if oneClient {
				seg.Client = netip.AddrFrom4([4]byte{10, 9, 0, 1})
			}
			got = d.ClientSegment(clock, flow, node, seg)
		case 1:
			// Replies of 0-40 bytes at a sequence from arg: new ones
			// refute probe misses, repeated ones (retransmissions) not.
			seg := Segment{Ack: seqnum.Value(uint32(arg) * 100), Seq: seqnum.Value(uint32(arg>>2) * 20), Len: int(arg>>1) % 3 * 20, Flags: header.TCPFlagAck}
			if arg&1 != 0 {
				seg.Flags |= header.TCPFlagRst
			}
			got = d.ServerSegment(clock, flow, node, seg)
		case 2:
			d.FlowEnded(flow)
		case 3:
			var since time.Time
			if arg%2 == 0 {
				since = clock.Add(-time.Duration(arg) * 10 * time.Millisecond)
			}
			got = d.BranchLag(clock, flow, node, since)
		case 4:
			got = d.Probe(clock, node, ProbeResult{OK: arg%3 != 0, Ready: arg%3 == 1, RTT: time.Duration(arg) * time.Millisecond})
		default:
			got = d.Tick(clock)
		}
		if d.Now().Before(lastNow) {
			t.Fatalf("clock went backwards: %v after %v", d.Now(), lastNow)
		}
		lastNow = d.Now()
		decisions += len(got)
		for _, dec := range got {
			switch dec.Kind {
			case NodeDown, NodeUp:
				if dec.Node < 0 || int(dec.Node) >= nodes {
					t.Fatalf("decision about unknown node: %+v", dec)
				}
				wantUp := dec.Kind == NodeUp
				if up[dec.Node] == wantUp {
					t.Fatalf("%v for node %d that is already in that state", dec.Kind, dec.Node)
				}
				up[dec.Node] = wantUp
				passive := dec.Signal == SignalDuplicates || dec.Signal == SignalSilence || dec.Signal == SignalAckLag
				if dec.Kind == NodeDown && cfg.Mode == Safe && passive && (oneClient || d.liveDCs() == 0) {
					t.Fatalf("safe mode: passive %v took node %d down (one client %v, live DCs %d)", dec.Signal, dec.Node, oneClient, d.liveDCs())
				}
				if dec.Kind == NodeDown && cfg.Mode == Paper && dec.Signal != SignalDuplicates {
					t.Fatalf("paper mode took a node down by %v", dec.Signal)
				}
			case DCDown, DCUp:
				wantUp := dec.Kind == DCUp
				if dcUp[dec.DC] == wantUp {
					t.Fatalf("%v for DC %d that is already in that state", dec.Kind, dec.DC)
				}
				dcUp[dec.DC] = wantUp
			default:
				t.Fatalf("unknown decision kind: %+v", dec)
			}
		}
		for n := range up {
			if d.NodeUp(NodeID(n)) != up[n] {
				t.Fatalf("node %d: NodeUp %v but decisions say %v", n, d.NodeUp(NodeID(n)), up[n])
			}
		}
		for dc := range dcUp {
			live := false
			for n := dc * perDC; n < (dc+1)*perDC; n++ {
				live = live || up[n]
			}
			if dcUp[dc] != live || d.DCUp(DCID(dc)) != live {
				t.Fatalf("DC %d: decisions say up=%v, query %v, live node %v", dc, dcUp[dc], d.DCUp(DCID(dc)), live)
			}
		}
		if pdc, ok := d.PreferredDC(); ok != (dcUp[0] || dcUp[1]) || (ok && !dcUp[pdc]) || (ok && pdc == 1 && dcUp[0]) {
			t.Fatalf("PreferredDC = %d, %v with DCs up %v", pdc, ok, dcUp)
		}
		if d.NumFlows() > cfg.MaxFlows {
			t.Fatalf("%d flows tracked, MaxFlows %d", d.NumFlows(), cfg.MaxFlows)
		}
		tr := d.Transitions()
		for i := range tr {
			if i > 0 && tr[i].At.Before(tr[i-1].At) {
				t.Fatalf("transitions out of order: %+v", tr)
			}
		}
		if len(tr) > 0 {
			if tr[len(tr)-1].At.Before(lastAt) {
				t.Fatalf("new transition earlier than an old one")
			}
			lastAt = tr[len(tr)-1].At
		}
		checkCounts(t, d)
	}
	checkInvariants(t, d)
	return decisions
}

var fuzzSeeds = []struct {
	mode byte
	ops  []byte
}{
	// fast: six copies of one client segment: Algorithm 1 takes node 0 down (1)
	{0, []byte{0, 1, 0, 10, 5, 0, 1, 0, 10, 5, 0, 1, 0, 10, 5, 0, 1, 0, 10, 5, 0, 1, 0, 10, 5, 0, 1, 0, 10, 5}},
	// paper: failed probes change nothing, then time goes backwards
	{1, []byte{4, 1, 0, 0, 10, 4, 1, 0, 0, 10, 4, 1, 0, 0, 10, 4, 1, 0, 0, 10, 4, 1, 0, 1, 10, 5, 0, 0, 0, 255}},
	// fast: data, ack, a lag, 2 s of silence: ack lag takes node 2 down (1)
	{0, []byte{0, 3, 3, 50, 10, 1, 3, 3, 60, 10, 3, 3, 3, 0, 100, 5, 0, 0, 0, 200, 5, 0, 0, 0, 200}},
	// fast: both sydney nodes miss two probes (DC down, 3), node 0 recovers (2)
	{0, []byte{4, 1, 0, 0, 10, 4, 2, 0, 0, 10, 4, 1, 0, 0, 10, 4, 2, 0, 0, 10, 4, 1, 0, 1, 10, 4, 1, 0, 1, 40, 5, 0, 0, 0, 10}},
	// start down: ready probes admit a node (2)
	{2, []byte{4, 4, 0, 1, 10, 4, 4, 0, 1, 40, 5, 0, 0, 0, 10}},
	// safe: node 0 fails a probe; flows 0 and 1 (two clients) retransmit
	// to it (five duplicates); 1.5 s later a tick takes it down (1)
	{4, []byte{4, 1, 0, 0, 0, 0, 1, 0, 10, 1, 0, 1, 1, 10, 1, 0, 1, 0, 10, 1, 0, 1, 1, 10, 1, 0, 1, 0, 10, 1, 0, 1, 1, 10, 1, 0, 1, 0, 10, 1, 0, 1, 1, 10, 1, 5, 0, 0, 0, 150}},
	// safe, one client: the same input takes nothing down (0)
	{12, []byte{4, 1, 0, 0, 0, 0, 1, 0, 10, 1, 0, 1, 1, 10, 1, 0, 1, 0, 10, 1, 0, 1, 1, 10, 1, 0, 1, 0, 10, 1, 0, 1, 1, 10, 1, 0, 1, 0, 10, 1, 0, 1, 1, 10, 1, 5, 0, 0, 0, 150}},
}

// TestFuzzSeedsDecide: the seeds reach decisions, so the fuzzer starts
// from inputs that exercise transitions.
func TestFuzzSeedsDecide(t *testing.T) {
	for i, want := range []int{1, 0, 1, 5, 2, 1, 0} {
		if got := fuzzRun(t, fuzzSeeds[i].mode, fuzzSeeds[i].ops); got != want {
			t.Errorf("seed %d: %d decisions, want %d", i, got, want)
		}
	}
}

// checkCounts recomputes the per-node counts from the flows.
func checkCounts[K comparable](t *testing.T, d *Detector[K]) {
	t.Helper()
	out := make([]int, len(d.nodes))
	lag := make([]int, len(d.nodes))
	total := 0
	for i := range d.ft.ents {
		if !d.ft.ents[i].used {
			continue
		}
		f := d.ft.ents[i].st
		if f.outstanding {
			out[f.node]++
		}
		if !f.lagSince.IsZero() {
			lag[f.node]++
			total++
		}
	}
	for i := range d.nodes {
		if d.nodes[i].outstanding != out[i] || d.nodes[i].lagging != lag[i] {
			t.Fatalf("node %d: outstanding %d lagging %d, flows say %d and %d", i, d.nodes[i].outstanding, d.nodes[i].lagging, out[i], lag[i])
		}
	}
	if n := d.ft.lists[listCheap].n + d.ft.lists[listValued].n; n != d.ft.len() {
		t.Fatalf("LRU lists hold %d flows, index %d", n, d.ft.len())
	}
	if d.lagTotal != total {
		t.Fatalf("lagTotal %d, flows say %d", d.lagTotal, total)
	}
}
