package middlebox

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/sequencer"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var testOrderSecret = []byte("order-secret-0123456789abcdef")

// fakeOrderNode is a node's order listener on loopback: it authenticates
// the sequencer, records every frame and answers each STAMP with APPLIED.
type fakeOrderNode struct {
	t      *testing.T
	ln     net.Listener
	mu     sync.Mutex
	frames []orderwire.Frame
	// frameConn[i] numbers the connection frames[i] came on (connections
	// stalled together are read concurrently once released).
	frameConn []int
	nconn     int
	conns     []net.Conn
	hellos    int
	// discard: frames are read but not recorded (allocation tests).
	discard atomic.Bool
	// stall: a new connection is not read until release is closed.
	stall   atomic.Bool
	release chan struct{}
}

func newFakeOrderNode(t *testing.T) *fakeOrderNode {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeOrderNode{t: t, ln: ln, release: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); n.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go n.serve(c)
		}
	}()
	return n
}

func (n *fakeOrderNode) serve(c net.Conn) {
	defer c.Close()
	accept := func(p peerauth.Hello) error {
		if p.Role != peerauth.RoleSequencer {
			return errors.New("not a sequencer")
		}
		return nil
	}
	if _, err := peerauth.Server(c, testOrderSecret, peerauth.Hello{Cluster: orderCluster, Role: peerauth.RoleNode, ID: 1}, accept, time.Now().Add(5*time.Second)); err != nil {
		return
	}
	n.mu.Lock()
	n.conns = append(n.conns, c)
	n.nconn++
	id := n.nconn
	n.mu.Unlock()
	if n.stall.Load() {
		<-n.release
	}
	rd := orderwire.NewReader(c)
	var f orderwire.Frame
	var out []byte
	for rd.ReadFrame(&f) == nil {
		if n.discard.Load() {
			continue
		}
		n.mu.Lock()
		n.frames = append(n.frames, f)
		n.frameConn = append(n.frameConn, id)
		if f.Type == orderwire.Hello {
			n.hellos++
		}
		n.mu.Unlock()
		if f.Type == orderwire.Stamp {
			out, _ = orderwire.Append(out[:0], &orderwire.Frame{Type: orderwire.Applied, G: f.G})
			c.Write(out)
		}
	}
}

// cut closes the order connections (the middlebox reconnects).
func (n *fakeOrderNode) cut() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		c.Close()
	}
	n.conns = nil
}

func (n *fakeOrderNode) snapshot() ([]orderwire.Frame, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]orderwire.Frame(nil), n.frames...), n.hellos
}

// newestConn returns the frames of the newest connection that sent a
// HELLO, in order.
func (n *fakeOrderNode) newestConn() []orderwire.Frame {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := -1
	for i, f := range n.frames {
		if f.Type == orderwire.Hello {
			id = max(id, n.frameConn[i])
		}
	}
	var out []orderwire.Frame
	for i, f := range n.frames {
		if n.frameConn[i] == id {
			out = append(out, f)
		}
	}
	return out
}

// stamps folds a node's STAMP frames into per-flow byte-range stamps,
// failing on any byte given two different positions.
func stamps(t *testing.T, frames []orderwire.Frame) map[orderwire.Flow][]sequencer.Range {
	t.Helper()
	out := map[orderwire.Flow][]sequencer.Range{}
	for _, f := range frames {
		if f.Type != orderwire.Stamp {
			continue
		}
		rs := out[f.Flow]
		dup := false
		for _, r := range rs {
			if f.Start < r.End && r.Start < f.End {
				if r != (sequencer.Range{Start: f.Start, End: f.End, G: f.G}) {
					t.Fatalf("flow %v: stamp [%d,%d)=%d overlaps [%d,%d)=%d", f.Flow, f.Start, f.End, f.G, r.Start, r.End, r.G)
				}
				dup = true
			}
		}
		if !dup {
			out[f.Flow] = append(rs, sequencer.Range{Start: f.Start, End: f.End, G: f.G})
		}
	}
	return out
}

type seqRig struct {
	*rig
	nodes map[netip.AddrPort]*fakeOrderNode
	state string
}

func newSeqRig(t *testing.T, state string) *seqRig { return newSeqRigCfg(t, state, nil) }

// newSeqRigCfg is newSeqRig with a last word on the configuration.
func newSeqRigCfg(t *testing.T, state string, edit func(*Config)) *seqRig {
	return newSeqRigServe(t, state, edit, func(c net.Conn) { defer c.Close(); io.Copy(c, c) })
}

// newSeqRigServe is newSeqRigCfg with the nodes' server serve instead of
// an echo.
func newSeqRigServe(t *testing.T, state string, edit func(*Config), serve func(net.Conn)) *seqRig {
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	nodes := map[netip.AddrPort]*fakeOrderNode{}
	for _, dc := range cfg.DCs {
		for _, ap := range dc.Nodes {
			nodes[ap] = newFakeOrderNode(t)
		}
	}
	if state == "" {
		state = filepath.Join(t.TempDir(), "seq.state")
	}
	cfg.Sequencing = &SequencingConfig{
		Ports: []uint16{6379}, StatePath: state, Secret: testOrderSecret, OrderDownTimeout: 300 * time.Millisecond,
		OrderAddr: func(n netip.AddrPort) string { return nodes[n].ln.Addr().String() },
	}
	if edit != nil {
		edit(&cfg)
	}
	r := newRig(t, cfg, serve)
	sr := &seqRig{rig: r, nodes: nodes, state: state}
	testenv.WaitFor(t, 10*time.Second, "order streams up", func() bool {
		for _, dc := range r.mb.DCs() {
			for _, n := range dc.Nodes {
				if n.Order == nil || !n.Order.Up {
					return false
				}
			}
		}
		return true
	})
	return sr
}

// exchange writes msg and reads its echo.
func exchange(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil || !bytes.Equal(back, msg) {
		t.Fatalf("echo: %v", err)
	}
}

// servingNodes returns the order nodes of the nodes serving the rig's
// only flow.
func (r *seqRig) servingNodes(t *testing.T) []*fakeOrderNode {
	t.Helper()
	fl := r.mb.Flows(0)
	if len(fl) != 1 || len(fl[0].Nodes) != 2 {
		t.Fatalf("flows %+v, want one forked flow on 2 nodes", fl)
	}
	var out []*fakeOrderNode
	for _, a := range fl[0].Nodes {
		out = append(out, r.nodes[netip.MustParseAddrPort(a)])
	}
	return out
}

// checkSameStamps checks that every node got contiguous stamps covering
// [0, total) of the one flow, with increasing positions, identical on
// every node.
func checkSameStamps(t *testing.T, nodes []*fakeOrderNode, total uint64) []sequencer.Range {
	t.Helper()
	var first []sequencer.Range
	for k, n := range nodes {
		frames, _ := n.snapshot()
		st := stamps(t, frames)
		if len(st) != 1 {
			t.Fatalf("node %d: stamps for %d flows, want 1", k, len(st))
		}
		for fl, rs := range st {
			if fl.ClientIP != testClient.As4() || fl.NodePort != 6379 {
				t.Fatalf("node %d: flow %v", k, fl)
			}
			var at, g uint64
			for _, r := range sortRanges(rs) {
				if r.Start != at || r.G <= g {
					t.Fatalf("node %d: ranges %v not contiguous from 0 with increasing G", k, rs)
				}
				at, g = r.End, r.G
			}
			if at != total {
				t.Fatalf("node %d: stamps cover [0,%d), want [0,%d)", k, at, total)
			}
			rs = sortRanges(rs)
			if first == nil {
				first = rs
			} else if !equalRanges(first, rs) {
				t.Fatalf("nodes got different stamps:\n%v\n%v", first, rs)
			}
		}
	}
	return first
}

func sortRanges(rs []sequencer.Range) []sequencer.Range {
	out := append([]sequencer.Range(nil), rs...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Start < out[i].Start {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func equalRanges(a, b []sequencer.Range) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSequencedFlowStampsEveryByteOnce: every node of a sequenced forked
// flow gets OPEN, then STAMPs covering every client byte exactly once with
// increasing positions (the same on every node), then CLOSE; their
// APPLIED reports show on /dcs and /metrics.
func TestSequencedFlowStampsEveryByteOnce(t *testing.T) {
	r := newSeqRig(t, "")
	c := r.dial(t, 6379)
	var total uint64
	for i := range 20 {
		msg := []byte(strings.Repeat("x", 1+i*97))
		exchange(t, c, msg)
		total += uint64(len(msg))
	}
	nodes := r.servingNodes(t)
	testenv.WaitFor(t, 10*time.Second, "stamps at every node", func() bool {
		for _, n := range nodes {
			frames, _ := n.snapshot()
			var got uint64
			for _, f := range frames {
				if f.Type == orderwire.Stamp {
					got = max(got, f.End)
				}
			}
			if got < total {
				return false
			}
		}
		return true
	})
	rs := checkSameStamps(t, nodes, total)
	st, ok := r.mb.ExportSequencer()
	if !ok || len(st.Flows) != 1 || st.Flows[0].Client.Addr() != testClient || st.Flows[0].VIPPort != 6379 ||
		st.Flows[0].State.High != total || st.LastG != rs[len(rs)-1].G || st.Ceiling <= st.LastG {
		t.Fatalf("exported sequencer state %+v", st)
	}
	// Every range the flow retains is one the nodes got.
	for _, er := range st.Flows[0].State.Ranges {
		found := false
		for _, r := range rs {
			found = found || r == er
		}
		if !found {
			t.Fatalf("exported range %+v not among the nodes' stamps", er)
		}
	}
	for _, n := range nodes {
		frames, _ := n.snapshot()
		if frames[0].Type != orderwire.Hello || frames[1].Type != orderwire.Open {
			t.Fatalf("first frames %v, %v; want HELLO then OPEN", frames[0].Type, frames[1].Type)
		}
	}
	info, ok := r.mb.Sequencer()
	if !ok || info.Stamped != uint64(len(rs)) || info.LastG != rs[len(rs)-1].G {
		t.Fatalf("sequencer %+v; want %d stamped, last G %d", info, len(rs), rs[len(rs)-1].G)
	}
	lastG := rs[len(rs)-1].G
	testenv.WaitFor(t, 10*time.Second, "APPLIED on /dcs", func() bool {
		for _, dc := range r.mb.DCs() {
			if dc.AppliedG != lastG {
				return false
			}
		}
		return true
	})
	rec := httptest.NewRecorder()
	r.mb.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{"sdnkvs_middlebox_sequencer_segments_stamped_total " + itoa(len(rs)), `sdnkvs_middlebox_sequencer_order_up{dc="dublin",node="10.210.2.11:6379"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	c.Close()
	testenv.WaitFor(t, 10*time.Second, "CLOSE at every node", func() bool {
		for _, n := range nodes {
			frames, _ := n.snapshot()
			if frames[len(frames)-1].Type != orderwire.Close {
				return false
			}
		}
		return true
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestOrderStreamReconnectResendsState: a node whose order connection
// breaks is sent HELLO, OPEN and the unacknowledged stamps again on the
// new connection; stamps never change, and the flow goes on.
func TestOrderStreamReconnectResendsState(t *testing.T) {
	r := newSeqRig(t, "")
	c := r.dial(t, 6379)
	exchange(t, c, []byte("first"))
	nodes := r.servingNodes(t)
	victim := nodes[1]
	_, hellos := victim.snapshot()
	victim.cut()
	testenv.WaitFor(t, 10*time.Second, "reconnect", func() bool {
		_, h := victim.snapshot()
		return h > hellos
	})
	var total uint64 = 5
	for i := range 10 {
		msg := bytes.Repeat([]byte{'a' + byte(i)}, 300)
		exchange(t, c, msg)
		total += 300
	}
	testenv.WaitFor(t, 10*time.Second, "stamps after reconnect", func() bool {
		for _, n := range nodes {
			frames, _ := n.snapshot()
			var got uint64
			for _, f := range frames {
				if f.Type == orderwire.Stamp {
					got = max(got, f.End)
				}
			}
			if got < total {
				return false
			}
		}
		return true
	})
	// The new connection starts with HELLO, OPEN and the stamps the flow
	// retains, including [0,5): acknowledged by both nodes, but stamped
	// less than the retention time ago.
	frames, _ := victim.snapshot()
	last := 0
	for i, f := range frames {
		if f.Type == orderwire.Hello {
			last = i
		}
	}
	if len(frames) < last+3 || frames[last+1].Type != orderwire.Open || frames[last+2].Type != orderwire.Stamp || frames[last+2].Start != 0 {
		t.Fatalf("frames after the reconnection's HELLO: %+v; want OPEN, then STAMP from offset 0", frames[last:min(len(frames), last+3)])
	}
	checkSameStamps(t, nodes, total)
}

// TestSequencerRestartNeverGoesBack: a middlebox restarted on the same
// state file (with its wall clock set back an hour) hands out positions
// above every position of the previous run.
func TestSequencerRestartNeverGoesBack(t *testing.T) {
	state := filepath.Join(t.TempDir(), "seq.state")
	r := newSeqRig(t, state)
	c := r.dial(t, 6379)
	exchange(t, c, []byte("before"))
	info, _ := r.mb.Sequencer()
	c.Close()
	r.mb.Close()

	stored, err := (sequencer.CeilingFile{Path: state}).Load()
	if err != nil || stored < info.LastG {
		t.Fatalf("stored ceiling %d (%v) below the last position %d", stored, err, info.LastG)
	}
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	cfg.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	cfg.Sequencing = &SequencingConfig{Ports: []uint16{6379}, StatePath: state, Secret: testOrderSecret, OrderAddr: func(netip.AddrPort) string { return "127.0.0.1:1" }}
	m2, err := New(newFakeDev(false, true), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	info2, _ := m2.Sequencer()
	if info2.LastG <= info.LastG {
		t.Fatalf("restarted sequencer starts at %d, not above %d", info2.LastG, info.LastG)
	}
}

func TestSequencingConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		seq  SequencingConfig
		want string
	}{
		"no port":       {SequencingConfig{StatePath: "x", Secret: testOrderSecret}, "no sequenced port"},
		"not multicast": {SequencingConfig{Ports: []uint16{6380}, StatePath: "x", Secret: testOrderSecret}, "not a multicast port"},
		"no state":      {SequencingConfig{Ports: []uint16{6379}, Secret: testOrderSecret}, "state file"},
		"short secret":  {SequencingConfig{Ports: []uint16{6379}, StatePath: "x", Secret: []byte("short")}, "secret shorter"},
	} {
		cfg := testConfig()
		cfg.MulticastPorts = []uint16{6379}
		cfg.Sequencing = &tc.seq
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error with %q", name, err, tc.want)
		}
	}
}

// TestSequencedStampDoesNotAllocate: stamping a first-seen client segment
// and queueing its STAMP to every branch allocates nothing once the flow's
// range buffer reached its bound (acknowledged ranges give way).
func TestSequencedStampDoesNotAllocate(t *testing.T) {
	r := newSeqRig(t, "")
	c := r.dial(t, 6379)
	exchange(t, c, []byte("warm"))
	for _, n := range r.nodes {
		n.discard.Store(true)
	}
	m := r.mb
	m.flows.Lock()
	defer m.flows.Unlock()
	var i int32 = -1
	for k := range m.flows.tab.slab {
		if m.flows.tab.slab[k].used {
			i = int32(k)
		}
	}
	f := &m.flows.tab.slab[i]
	cli := netip.AddrPortFrom(netip.AddrFrom4(f.key.cli), f.key.cport)
	seq := f.cliISS + 1 + 4
	buf := mkTCP(tcpSpec{src: cli, dst: netip.AddrPortFrom(testVIP, 6379), flags: header.TCPFlagAck, seq: seq, ack: 1, payload: make([]byte, 100)})
	var p packet.TCP
	if err := p.Parse(buf, nil); err != nil {
		t.Fatal(err)
	}
	sf := &m.seq.flows[i]
	step := func() {
		p.SetSeq(seq)
		if !m.seqStamp(i, &p, time.Now().UnixNano()) {
			t.Fatal("segment refused")
		}
		seq += 100
		sf.Ack(seq, time.Now().UnixNano())
		m.flows.Unlock() // let the order writers drain
		m.seqFlush()
		m.flows.Lock()
	}
	before := m.seq.stamped.Load()
	for range sequencer.DefaultMaxRanges + 100 {
		step()
	}
	allocs := testing.AllocsPerRun(1000, step)
	if allocs != 0 {
		t.Fatalf("%v allocations per stamped segment, want 0", allocs)
	}
	if got := m.seq.stamped.Load() - before; got != sequencer.DefaultMaxRanges+100+1001 {
		t.Fatalf("%d segments stamped, want every one", got)
	}
}

// TestOrderQueueOverflowResyncs: a node that stops reading its order
// stream makes its queue overflow; the middlebox drops the queue and the
// connection (never blocking the data path), reconnects, and the resync
// gives the node every stamp the flow retains, identical to the ones it
// would have had.
func TestOrderQueueOverflowResyncs(t *testing.T) {
	r := newSeqRig(t, "")
	c := r.dial(t, 6379)
	exchange(t, c, []byte("warm"))
	victim := r.servingNodes(t)[1]
	victim.stall.Store(true)
	victim.cut() // the next connection stalls
	m := r.mb
	var o *orderConn
	for _, oc := range m.seq.conns {
		if oc.addr == victim.ln.Addr().String() {
			o = oc
		}
	}
	testenv.WaitFor(t, 10*time.Second, "a stalled connection", func() bool { return o.ups.Load() == 2 && o.up.Load() })
	m.flows.Lock()
	var i int32
	for k := range m.flows.tab.slab {
		if m.flows.tab.slab[k].used {
			i = int32(k)
		}
	}
	f := &m.flows.tab.slab[i]
	cli := netip.AddrPortFrom(netip.AddrFrom4(f.key.cli), f.key.cport)
	seq := f.cliISS + 1 + 4
	buf := mkTCP(tcpSpec{src: cli, dst: netip.AddrPortFrom(testVIP, 6379), flags: header.TCPFlagAck, seq: seq, ack: 1, payload: make([]byte, 100)})
	var p packet.TCP
	if err := p.Parse(buf, nil); err != nil {
		t.Fatal(err)
	}
	// Stamp until the queue overflowed (socket buffers fill first).
	for n := 0; o.dropped.Load() == 0; n++ {
		if n > 2_000_000 {
			t.Fatal("queue never overflowed")
		}
		p.SetSeq(seq)
		if !m.seqStamp(i, &p, time.Now().UnixNano()) {
			t.Fatal("segment refused")
		}
		seq += 100
		m.seq.flows[i].Ack(seq, time.Now().UnixNano()) // acknowledged, still retained
		if n%64 == 0 {
			m.flows.Unlock()
			m.seqFlush()
			m.flows.Lock()
		}
	}
	high := m.seq.flows[i].High()
	m.flows.Unlock()
	m.seqFlush()
	victim.stall.Store(false)
	close(victim.release)
	testenv.WaitFor(t, 20*time.Second, "reconnect after the overflow", func() bool { return o.ups.Load() >= 3 && o.up.Load() })
	testenv.WaitFor(t, 90*time.Second, "resynced stamps", func() bool {
		frames, _ := victim.snapshot()
		for _, f := range frames {
			if f.Type == orderwire.Stamp && f.End == high {
				return true
			}
		}
		return false
	})
	// The last connection's frames: on a slow machine the stall can
	// outlast the order stream's TCP_USER_TIMEOUT, so the stalled
	// connection is aborted and redialed, and both are read at once on
	// release.
	last := victim.newestConn()
	if len(last) < 2 || last[0].Type != orderwire.Hello || last[1].Type != orderwire.Open {
		t.Fatalf("after the overflow's reconnection: %d frames on the last connection, want HELLO then OPEN first", len(last))
	}
	// Every stamp the victim holds equals the other node's (which never
	// lost a frame), and the resync covered the retained ranges up to the
	// highest offset.
	other := r.servingNodes(t)[0]
	// The other node reads every frame the loop stamped (over 100k): a
	// -race build under load takes a while.
	testenv.WaitFor(t, 90*time.Second, "the other node's stamps", func() bool {
		fr, _ := other.snapshot()
		for _, f := range fr[max(0, len(fr)-4096):] {
			if f.Type == orderwire.Stamp && f.End == high {
				return true
			}
		}
		return false
	})
	ofr, _ := other.snapshot()
	want := map[uint64]orderwire.Frame{}
	for _, f := range ofr {
		if f.Type == orderwire.Stamp {
			want[f.Start] = f
		}
	}
	n := 0
	for _, f := range last {
		if f.Type != orderwire.Stamp {
			continue
		}
		w, ok := want[f.Start]
		if !ok || w.End != f.End || w.G != f.G {
			t.Fatalf("victim's resynced stamp [%d,%d)=%d differs from the other node's %+v", f.Start, f.End, f.G, w)
		}
		n++
	}
	t.Logf("%d frames dropped by the overflow, %d stamps resynced", o.dropped.Load(), n)
}

// TestSequencerStateUnwritableRefusesToStart: a state file that cannot be
// written stops New with an error naming it: no position is handed out
// before its ceiling is durable.
func TestSequencerStateUnwritableRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	state := filepath.Join(blocker, "seq.state") // a file as its directory
	cfg.Sequencing = &SequencingConfig{Ports: []uint16{6379}, StatePath: state, Secret: testOrderSecret}
	m, err := New(newFakeDev(false, true), cfg)
	if err == nil {
		m.Close()
		t.Fatal("New succeeded with an unwritable sequencer state file")
	}
	if !strings.Contains(err.Error(), state) {
		t.Fatalf("error %q does not name the state file", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.state"), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Sequencing.StatePath = filepath.Join(dir, "bad.state")
	if m, err := New(newFakeDev(false, true), cfg); err == nil {
		m.Close()
		t.Fatal("New succeeded with a damaged sequencer state file")
	}
}

// TestOrderStreamDownRemovesBranch: a node whose order stream stays down
// (its listener gone) longer than OrderDownTimeout is removed from the
// sequenced flows it serves, before it would fail their writes for want
// of stamps; the flow goes on with the other DC.
func TestOrderStreamDownRemovesBranch(t *testing.T) {
	r := newSeqRig(t, "")
	c := r.dial(t, 6379)
	exchange(t, c, []byte("before"))
	nodes := r.servingNodes(t)
	victim := nodes[1]
	victimAddr := r.mb.Flows(0)[0].Nodes[1]
	victim.ln.Close()
	victim.cut()
	testenv.WaitFor(t, 10*time.Second, "the victim's branch removed", func() bool {
		for _, b := range r.mb.Flows(0)[0].Branches {
			if b.Node == victimAddr && !b.Live {
				return true
			}
		}
		return false
	})
	exchange(t, c, []byte("after: served by the other DC alone"))
	if b := r.mb.Flows(0)[0].Branches; b[0].Live == b[1].Live {
		t.Fatalf("branches %+v, want exactly the victim's removed", b)
	}
}
