package failover

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

func TestConfigValidateNamesTheField(t *testing.T) {
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"Mode", func(c *Config) { c.Mode = 7 }},
		{"Threshold", func(c *Config) { c.Threshold = -1 }},
		{"SilenceTimeout", func(c *Config) { c.SilenceTimeout = -time.Second }},
		{"AckLagTimeout", func(c *Config) { c.AckLagTimeout = -time.Second }},
		{"ProbeMisses", func(c *Config) { c.ProbeMisses = -2 }},
		{"DCProbeMisses", func(c *Config) { c.DCProbeMisses = -2 }},
		{"DCProbeMisses", func(c *Config) { c.ProbeMisses = 2; c.DCProbeMisses = 3 }},
		{"ReadmitAfter", func(c *Config) { c.ReadmitAfter = -1 }},
		{"MinRTO", func(c *Config) { c.MinRTO = -1 }},
		{"InitialRTT", func(c *Config) { c.InitialRTT = -1 }},
		{"MaxFlows", func(c *Config) { c.MaxFlows = -1 }},
		{"FlowIdle", func(c *Config) { c.FlowIdle = -1 }},
		{"History", func(c *Config) { c.History = -1 }},
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	for _, tc := range cases {
		c := DefaultConfig()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("%s: Validate() = %v, want an error naming Config.%s", tc.field, err, tc.field)
		}
		if _, err := New[int](c, testTopo(1)); err == nil {
			t.Errorf("%s: New accepted the bad config", tc.field)
		}
	}
	// Zero fields take defaults; a small ProbeMisses pulls DCProbeMisses down.
	d, err := New[int](Config{ProbeMisses: 1}, testTopo(1))
	if err != nil {
		t.Fatal(err)
	}
	if c := d.Config(); c.Threshold != 5 || c.DCProbeMisses != 1 || c.ReadmitAfter != 2*time.Second {
		t.Fatalf("defaults not filled: %+v", c)
	}
}

func TestTopologyValidation(t *testing.T) {
	a := netip.MustParseAddrPort("10.0.0.1:6379")
	b := netip.MustParseAddrPort("10.0.0.2:6379")
	cases := []struct {
		name string
		topo []DC
		want string
	}{
		{"empty", nil, "no DC"},
		{"unnamed", []DC{{Nodes: []netip.AddrPort{a}}}, "no name"},
		{"dup name", []DC{{Name: "x", Nodes: []netip.AddrPort{a}}, {Name: "x", Nodes: []netip.AddrPort{b}}}, "twice"},
		{"no nodes", []DC{{Name: "x"}}, "no node"},
		{"bad addr", []DC{{Name: "x", Nodes: []netip.AddrPort{{}}}}, "invalid"},
		{"shared node", []DC{{Name: "x", Nodes: []netip.AddrPort{a}}, {Name: "y", Nodes: []netip.AddrPort{a}}}, "is in DC"},
	}
	for _, tc := range cases {
		_, err := New[int](Config{}, tc.topo)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestModeParse(t *testing.T) {
	for _, m := range []Mode{Fast, Paper} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Fatalf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseMode("slow"); err == nil {
		t.Fatal("ParseMode accepted \"slow\"")
	}
	var cfg struct{ Mode Mode }
	if err := json.Unmarshal([]byte(`{"Mode":"paper"}`), &cfg); err != nil || cfg.Mode != Paper {
		t.Fatalf("JSON mode: %v, %v", cfg.Mode, err)
	}
	if err := json.Unmarshal([]byte(`{"Mode":"slow"}`), &cfg); err == nil {
		t.Fatal("JSON accepted mode \"slow\"")
	}
}

// TestTransitionsJSON: /dcs shows kinds and signals by name.
func TestTransitionsJSON(t *testing.T) {
	d, _ := New[int](Config{ProbeMisses: 1}, testTopo(1))
	d.Probe(ms(5), 0, ProbeResult{})
	b, err := json.Marshal(d.Transitions())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Kind":"NodeDown"`, `"Signal":"probes"`, `"Kind":"DCDown"`, `"Signal":"nodes"`, `"Cause":"node 10.0.1.1:6379: 1 probes missed"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
}

func TestQueriesAndAddresses(t *testing.T) {
	d, err := New[int](Config{}, testTopo(3))
	if err != nil {
		t.Fatal(err)
	}
	if d.NumNodes() != 6 || d.NumDCs() != 2 {
		t.Fatalf("NumNodes %d NumDCs %d", d.NumNodes(), d.NumDCs())
	}
	id, ok := d.NodeByAddr(netip.MustParseAddrPort("10.0.2.2:6379"))
	if !ok || id != 4 {
		t.Fatalf("NodeByAddr = %v, %v; want 4", id, ok)
	}
	info, ok := d.Node(4)
	if !ok || info.DC != 1 || info.Addr.String() != "10.0.2.2:6379" {
		t.Fatalf("Node(4) = %+v", info)
	}
	if _, ok := d.Node(6); ok {
		t.Fatal("Node(6) exists")
	}
	if _, ok := d.NodeState(-1); ok {
		t.Fatal("NodeState(-1) exists")
	}
	if _, ok := d.DCState(2); ok {
		t.Fatal("DCState(2) exists")
	}
	if d.NodeUp(99) || d.DCUp(-1) {
		t.Fatal("unknown node or DC reported up")
	}
	if got := d.LiveNodes(1, make([]NodeID, 0, 8)); len(got) != 3 || got[0] != 3 {
		t.Fatalf("LiveNodes(dublin) = %v", got)
	}
	if got := d.LiveNodes(5, nil); got != nil {
		t.Fatalf("LiveNodes(unknown) = %v", got)
	}
	s, _ := d.DCState(0)
	if s.Name != "sydney" || !s.Up || s.Live != 3 || s.Nodes != 3 {
		t.Fatalf("DCState(0) = %+v", s)
	}
	if thr := d.SilenceThreshold(0); thr != 1300*time.Millisecond {
		t.Fatalf("silence threshold with InitialRTT 100ms = %v, want 1.3s", thr)
	}
}

// TestThresholdsScaleWithRTT: a far node (340 ms RTT) gets longer silence
// and ack-lag thresholds than a near one (10 ms).
func TestThresholdsScaleWithRTT(t *testing.T) {
	d, _ := New[int](Config{}, testTopo(1))
	for i := 0; i < 50; i++ {
		d.Probe(ms(float64(i*100)), 0, ProbeResult{OK: true, Ready: true, RTT: 10 * time.Millisecond})
		d.Probe(ms(float64(i*100)), 1, ProbeResult{OK: true, Ready: true, RTT: 340 * time.Millisecond})
	}
	near, far := d.SilenceThreshold(0), d.SilenceThreshold(1)
	if near != 850*time.Millisecond {
		t.Errorf("near silence threshold %v, want 850ms (10ms + 4*210ms)", near)
	}
	if far < 2*time.Second || far > 3*time.Second {
		t.Errorf("far silence threshold %v, want about 340ms + 4*540ms", far)
	}
	if ln, lf := d.AckLagThreshold(0), d.AckLagThreshold(1); ln != 500*time.Millisecond || lf <= time.Second {
		t.Errorf("ack-lag thresholds near %v far %v", ln, lf)
	}
	s, _ := d.NodeState(1)
	if s.SRTT != 340*time.Millisecond {
		t.Errorf("far SRTT %v", s.SRTT)
	}
	// An absurd sample is clamped rather than overflowing.
	d.Probe(ms(6000), 0, ProbeResult{OK: true, Ready: true, RTT: 1 << 62})
	if thr := d.SilenceThreshold(0); thr <= 0 || thr > 10*time.Minute {
		t.Errorf("threshold after absurd RTT sample: %v", thr)
	}
}

func TestBadInputIsCountedAndDropped(t *testing.T) {
	d, _ := New[int](Config{}, testTopo(1))
	d.ClientSegment(ms(0), 1, 7, Segment{Len: 10})
	d.ClientSegment(ms(0), 1, -1, Segment{Len: 10})
	d.ClientSegment(ms(0), 1, 0, Segment{Len: -5})
	d.ServerSegment(ms(0), 1, 9, Segment{})
	d.BranchLag(ms(0), 1, 12, ms(0))
	d.Probe(ms(0), 3, ProbeResult{OK: true})
	d.Probe(ms(0), 0, ProbeResult{OK: true, RTT: -time.Second})
	if got := d.Stats().BadInput; got != 7 {
		t.Fatalf("BadInput = %d, want 7", got)
	}
	if d.NumFlows() != 0 {
		t.Fatalf("bad input created %d flows", d.NumFlows())
	}
	// A lag report on an untracked flow and a client RST change nothing.
	d.BranchLag(ms(1), 42, 0, ms(0))
	d.ClientSegment(ms(1), 43, 0, Segment{Flags: header.TCPFlagRst})
	if d.NumFlows() != 0 || d.lagTotal != 0 {
		t.Fatalf("flows %d lagTotal %d", d.NumFlows(), d.lagTotal)
	}
}

func TestTimeNeverGoesBackwards(t *testing.T) {
	d, _ := New[int](Config{Mode: Paper}, testTopo(1))
	seg := Segment{Seq: 100, Len: 10}
	d.ClientSegment(ms(1000), 1, 0, seg)
	d.ClientSegment(ms(500), 1, 0, seg) // earlier clock: treated as 1000
	if d.Now() != ms(1000) {
		t.Fatalf("Now = %v, want the latest time seen", d.Now())
	}
	if d.Stats().TimeWentBack != 1 {
		t.Fatalf("TimeWentBack = %d", d.Stats().TimeWentBack)
	}
	for i := 0; i < 4; i++ {
		d.ClientSegment(ms(0), 1, 0, seg)
	}
	tr := d.Transitions()
	if len(tr) != 2 || !tr[0].At.Equal(ms(1000)) {
		t.Fatalf("transitions %+v: want NodeDown and DCDown stamped at the latest time", tr)
	}
	// A lag reported to start in the future is clamped to now.
	f, _ := New[int](Config{}, testTopo(1))
	f.ClientSegment(ms(0), 1, 0, seg)
	f.BranchLag(ms(0), 1, 0, ms(100000))
	i, _ := f.ft.lookup(1)
	if got := f.ft.ents[i].st.lagSince; !got.Equal(ms(0)) {
		t.Fatalf("lagSince = %v, want clamped to now", got)
	}
}

func TestFlowBoundsAndExpiry(t *testing.T) {
	d, _ := New[int](Config{MaxFlows: 3, FlowIdle: 10 * time.Second}, testTopo(1))
	for i := 0; i < 5; i++ {
		d.ClientSegment(ms(0), i, 0, Segment{Seq: 1, Len: 1})
	}
	// Full: each new flow evicts the least recently active (0, then 1).
	if d.NumFlows() != 3 || d.Stats().FlowsEvicted != 2 {
		t.Fatalf("flows %d evicted %d, want 3 and 2", d.NumFlows(), d.Stats().FlowsEvicted)
	}
	if _, ok := d.ft.lookup(0); ok {
		t.Fatal("flow 0 (least recently active) not evicted")
	}
	if d.nodes[0].outstanding != 3 {
		t.Fatalf("outstanding %d, want 3", d.nodes[0].outstanding)
	}
	d.FlowEnded(4)
	d.FlowEnded(4) // twice is fine
	if d.NumFlows() != 2 || d.nodes[0].outstanding != 2 {
		t.Fatalf("after FlowEnded: flows %d outstanding %d", d.NumFlows(), d.nodes[0].outstanding)
	}
	d.BranchLag(ms(1), 3, 0, ms(1))
	d.Tick(ms(5000))
	if d.NumFlows() != 2 {
		t.Fatalf("flows expired too early")
	}
	d.ClientSegment(ms(6000), 2, 0, Segment{Seq: 2})
	d.Tick(ms(10500))
	if d.NumFlows() != 1 || d.Stats().FlowsExpired != 1 || d.nodes[0].outstanding != 1 || d.lagTotal != 0 {
		t.Fatalf("after expiry: flows %d expired %d outstanding %d lagTotal %d",
			d.NumFlows(), d.Stats().FlowsExpired, d.nodes[0].outstanding, d.lagTotal)
	}
	// A flow moved to another node is re-tracked against the new node.
	d.ClientSegment(ms(10600), 2, 1, Segment{Seq: 5, Len: 1})
	if d.nodes[0].outstanding != 0 || d.nodes[1].outstanding != 1 {
		t.Fatalf("moved flow: outstanding %d/%d", d.nodes[0].outstanding, d.nodes[1].outstanding)
	}
}

func TestTransitionsRingIsBounded(t *testing.T) {
	d, _ := New[int](Config{History: 5, ProbeMisses: 1, ReadmitAfter: time.Millisecond}, testTopo(2))
	at := 0.0
	for i := 0; i < 10; i++ {
		at += 10
		d.Probe(ms(at), 0, ProbeResult{})
		at += 10
		d.Probe(ms(at), 0, ProbeResult{OK: true, Ready: true})
		at += 10
		d.Probe(ms(at), 0, ProbeResult{OK: true, Ready: true})
	}
	tr := d.Transitions()
	if len(tr) != 5 {
		t.Fatalf("%d transitions kept, want 5", len(tr))
	}
	for i := 1; i < len(tr); i++ {
		if tr[i].At.Before(tr[i-1].At) {
			t.Fatalf("transitions out of order: %+v", tr)
		}
	}
	if last := tr[len(tr)-1]; last.Kind != NodeUp || !last.At.Equal(ms(at)) {
		t.Fatalf("last transition %+v", last)
	}
	st := d.Stats()
	if st.NodeDowns != 10 || st.NodeUps != 10 || st.DCDowns != 0 {
		t.Fatalf("stats %+v", st)
	}
	s, _ := d.NodeState(0)
	if !s.Up || !strings.Contains(s.Cause, "ready") {
		t.Fatalf("node state %+v", s)
	}
	// History 0 keeps nothing and does not crash.
	z, _ := New[int](Config{ProbeMisses: 1}, testTopo(1))
	z.hist = nil
	z.Probe(ms(0), 0, ProbeResult{})
	if len(z.Transitions()) != 0 {
		t.Fatal("history kept without room")
	}
}

func TestDecisionCauses(t *testing.T) {
	d, _ := New[int](Config{}, testTopo(1))
	var got []Decision
	for i := 0; i < 4; i++ {
		got = append(got, d.Probe(ms(float64(100*i)), 0, ProbeResult{})...)
	}
	if len(got) != 2 {
		t.Fatalf("decisions %+v", got)
	}
	if c := got[0].Cause; !strings.Contains(c, "10.0.1.1:6379") || !strings.Contains(c, "4 probes missed") {
		t.Errorf("NodeDown cause %q", c)
	}
	if c := got[1].Cause; !strings.Contains(c, "no live node") {
		t.Errorf("DCDown cause %q", c)
	}
	if got[0].Node != 0 || got[1].Node != -1 || got[1].DC != 0 {
		t.Errorf("decision subjects %+v", got)
	}
	for _, k := range []Kind{NodeDown, NodeUp, DCDown, DCUp} {
		if strings.HasPrefix(k.String(), "Kind(") {
			t.Errorf("kind %d has no name", k)
		}
	}
	for s := SignalNone; s <= SignalNodes; s++ {
		if strings.HasPrefix(s.String(), "Signal(") {
			t.Errorf("signal %d has no name", s)
		}
	}
}

// flowKey is a packed, pointer-free flow key as the middlebox would use.
type flowKey struct {
	src, dst [4]byte
	sport    uint16
	dport    uint16
	branch   uint8
}

// TestHotPathAllocatesNothing: per-packet observations on known flows,
// probe results and ticks allocate nothing.
func TestHotPathAllocatesNothing(t *testing.T) {
	d, _ := New[flowKey](Config{}, testTopo(3))
	keys := make([]flowKey, 64)
	for i := range keys {
		keys[i] = flowKey{src: [4]byte{10, 9, 0, byte(i)}, dst: [4]byte{10, 0, 1, 1}, sport: uint16(40000 + i), dport: 6379, branch: uint8(i % 2)}
		d.ClientSegment(ms(0), keys[i], NodeID(i%6), Segment{Seq: 1, Flags: header.TCPFlagSyn})
	}
	at := time.Duration(0)
	seq := uint32(2)
	allocs := testing.AllocsPerRun(1000, func() {
		at += 100 * time.Microsecond
		now := t0.Add(at)
		for i, k := range keys {
			n := NodeID(i % 6)
			d.ClientSegment(now, k, n, Segment{}.withSeq(seq, 100))
			d.ServerSegment(now, k, n, Segment{Flags: header.TCPFlagAck}.withAck(seq+100))
		}
		d.BranchLag(now, keys[1], 1, now)
		d.BranchLag(now, keys[1], 1, time.Time{})
		d.Probe(now, 2, ProbeResult{OK: true, Ready: true, RTT: time.Millisecond})
		d.Tick(now)
		seq += 100
	})
	if allocs != 0 {
		t.Fatalf("hot path allocates %.1f times per run, want 0", allocs)
	}
	if d.Stats().NodeDowns != 0 {
		t.Fatalf("a healthy workload produced NodeDowns: %+v", d.Transitions())
	}
}

func (s Segment) withSeq(seq uint32, n int) Segment { s.Seq = seqnum.Value(seq); s.Len = n; return s }
func (s Segment) withAck(ack uint32) Segment        { s.Ack = seqnum.Value(ack); return s }

// BenchmarkObserve: a client segment and its acknowledgement through the
// detector, over 1 and 4096 flows, against a baseline measured in the same
// run: the bare per-flow map work (two lookups and two stores of the same
// key and value type). Reports ns per segment pair and the ratio.
func BenchmarkObserve(b *testing.B) {
	for _, flows := range []int{1, 4096} {
		b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
			d, _ := New[flowKey](Config{}, testTopo(9))
			keys := make([]flowKey, flows)
			seqs := make([]uint32, flows)
			base := make(map[flowKey]flowState, flows)
			for i := range keys {
				keys[i] = flowKey{src: [4]byte{10, 9, byte(i >> 8), byte(i)}, sport: uint16(i), dport: 6379}
				d.ClientSegment(ms(0), keys[i], NodeID(i%18), Segment{Seq: 1, Flags: header.TCPFlagSyn})
				base[keys[i]] = flowState{}
				seqs[i] = 2
			}
			now := t0
			start := time.Now()
			for i := 0; i < b.N; i++ {
				k := keys[i%flows]
				f := base[k]
				f.sndNxt += 1000
				f.last = now
				base[k] = f
				f = base[k]
				f.srvAck = f.sndNxt
				base[k] = f
			}
			baseline := time.Since(start)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := i % flows
				now = now.Add(time.Microsecond)
				n := NodeID(j % 18)
				d.ClientSegment(now, keys[j], n, Segment{}.withSeq(seqs[j], 1000))
				d.ServerSegment(now, keys[j], n, Segment{Flags: header.TCPFlagAck}.withAck(seqs[j]+1000))
				seqs[j] += 1000
			}
			b.StopTimer()
			if baseline > 0 {
				b.ReportMetric(float64(b.Elapsed())/float64(baseline), "x-baseline")
			}
		})
	}
}

// TestEvictionSparesFlowsWithOutstandingData: a full table evicts idle and
// half-open flows (least recently active first) before a flow whose server
// has answered and whose client data is outstanding.
func TestEvictionSparesFlowsWithOutstandingData(t *testing.T) {
	d, _ := New[int](Config{Mode: Paper, MaxFlows: 3}, testTopo(1))
	d.ClientSegment(ms(0), 1, 0, Segment{Seq: 1, Len: 10})
	d.ServerSegment(ms(1), 1, 0, Segment{Ack: 5, Flags: header.TCPFlagAck}) // valued: answered, 6 bytes outstanding
	for i := 2; i < 100; i++ {
		d.ClientSegment(ms(float64(i)), i, 0, Segment{Seq: 1, Flags: header.TCPFlagSyn})
	}
	if _, ok := d.ft.lookup(1); !ok {
		t.Fatal("the flow with outstanding data was evicted by a SYN flood")
	}
	if d.NumFlows() != 3 || d.Stats().FlowsEvicted != 96 {
		t.Fatalf("flows %d evicted %d, want 3 and 96", d.NumFlows(), d.Stats().FlowsEvicted)
	}
}

// TestFloodThenOutageDetected: 65,536 flows of one client's SYNs (the
// default table size) do not blind the detector: a real outage afterwards,
// seen as retransmissions on established flows, is still detected, in
// paper mode (Algorithm 1) and in safe mode (two clients, a failing probe).
func TestFloodThenOutageDetected(t *testing.T) {
	for _, mode := range []Mode{Paper, Safe} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Mode = mode
			d, _ := New[int](cfg, testTopo(1))
			flooder := netip.MustParseAddr("10.66.0.1")
			for i := range 65536 {
				if decs := d.ClientSegment(ms(0), 1000+i, 0, Segment{Seq: 1, Flags: header.TCPFlagSyn, Client: flooder}); len(decs) > 0 && mode != Paper {
					t.Fatalf("flood decided %v", decs)
				}
			}
			// Two legitimate clients with established flows, then n0 dies:
			// their data is retransmitted unanswered.
			for f := range 2 {
				cli := netip.AddrFrom4([4]byte{10, 1, 0, byte(f + 1)})
				d.ClientSegment(ms(10), f, 0, Segment{Seq: 100, Len: 10, Flags: header.TCPFlagAck, Client: cli})
				d.ServerSegment(ms(20), f, 0, Segment{Ack: 110, Flags: header.TCPFlagAck})
			}
			var down bool
			for k := 1; k <= 6 && !down; k++ {
				at := 30 + float64(k)*300
				for f := range 2 {
					cli := netip.AddrFrom4([4]byte{10, 1, 0, byte(f + 1)})
					d.ClientSegment(ms(at), f, 0, Segment{Seq: 110, Len: 10, Flags: header.TCPFlagAck, Client: cli})
					if f == 0 {
						d.ClientSegment(ms(at), f, 0, Segment{Seq: 110, Len: 10, Flags: header.TCPFlagAck, Client: cli}) // and once more
					}
				}
				d.Probe(ms(at), 0, ProbeResult{})
				d.Tick(ms(at))
				down = !d.NodeUp(0)
			}
			if !down {
				t.Fatalf("outage after the flood not detected: %+v, stats %+v", mustState(d, 0), d.Stats())
			}
		})
	}
}

func mustState[K comparable](d *Detector[K], n NodeID) NodeStatus {
	s, _ := d.NodeState(n)
	return s
}
