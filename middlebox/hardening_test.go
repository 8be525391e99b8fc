package middlebox

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The tests of issue 11's reproductions at the unit level: the middlebox
// fed packets by hand with a settable clock.

func synFrom(src netip.AddrPort, dst netip.AddrPort, seq uint32) []byte {
	return mkTCP(tcpSpec{src: src, dst: dst, flags: header.TCPFlagSyn, seq: seq})
}

// nodeOf returns the node address a packet the middlebox wrote goes to.
func dstOf(t *testing.T, out []byte) netip.AddrPort {
	t.Helper()
	pkt := out[virtio.HdrLen:]
	tcp := validTCP(t, pkt)
	return netip.AddrPortFrom(netip.AddrFrom4(header.IPv4(pkt).DestinationAddress().As4()), tcp.DestinationPort())
}

// handshake opens an anycast flow from cli (SYN, the node's SYN-ACK, the
// client's ACK) and returns its node.
func handshake(t *testing.T, m *Middlebox, dev *fakeDev, cli netip.AddrPort) netip.AddrPort {
	t.Helper()
	feed(m, nil, synFrom(cli, vipAny, 100))
	out := dev.take()
	if len(out) != 1 {
		t.Fatalf("SYN: %d packets written", len(out))
	}
	node := dstOf(t, out[0])
	feed(m, nil, mkTCP(tcpSpec{src: node, dst: cli, flags: header.TCPFlagSyn | header.TCPFlagAck, seq: 5000, ack: 101}))
	feed(m, nil, mkTCP(tcpSpec{src: cli, dst: vipAny, flags: header.TCPFlagAck, seq: 101, ack: 5001}))
	dev.take()
	return node
}

// A half-open flow lives HalfOpenTimeout, not the idle timeout, and the
// node's SYN-ACK (and its retransmissions) alone neither establishes nor
// keeps it.
func TestHalfOpenTimeoutSynAckAloneDoesNotEstablish(t *testing.T) {
	dev := newFakeDev(false, true)
	m, clk := newUnit(t, testConfig(), dev)
	feed(m, nil, synFrom(cliAP, vipAny, 100))
	node := dstOf(t, dev.take()[0])
	for range 4 {
		clk.Add(time.Second)
		feed(m, nil, mkTCP(tcpSpec{src: node, dst: cliAP, flags: header.TCPFlagSyn | header.TCPFlagAck, seq: 5000, ack: 101}))
		if n := m.Expire(clk.Now()); n != 0 {
			t.Fatalf("half-open flow removed %v after its SYN", clk.Now().Sub(time.Unix(1000, 0)))
		}
	}
	if fl := m.Flows(0); len(fl) != 1 || fl[0].State != "syn-received" {
		t.Fatalf("after SYN-ACKs: %+v", fl)
	}
	clk.Add(DefaultHalfOpenTimeout - 4*time.Second)
	if n := m.Expire(clk.Now()); n != 1 || m.c.halfOpenExpired.Load() != 1 {
		t.Fatalf("half-open flow not removed after %v (removed %d)", DefaultHalfOpenTimeout, n)
	}
}

// One source holds at most MaxHalfOpenPerSource half-open flows; its
// further SYNs are dropped and counted, other sources are unaffected, and
// completing a handshake frees a place.
func TestHalfOpenQuotaPerSource(t *testing.T) {
	cfg := testConfig()
	cfg.MaxHalfOpenPerSource = 4
	dev := newFakeDev(false, true)
	m, _ := newUnit(t, cfg, dev)
	flooder := netip.MustParseAddr("10.66.0.1")
	for p := range 10 {
		feed(m, nil, synFrom(netip.AddrPortFrom(flooder, uint16(20000+p)), vipAny, 1))
	}
	if s := m.Stats(); s.FlowsActive != 4 || m.Drop(ReasonHalfOpenQuota) != 6 {
		t.Fatalf("flows %d, half_open_quota drops %d; want 4 and 6", s.FlowsActive, m.Drop(ReasonHalfOpenQuota))
	}
	if w := dev.take(); len(w) != 4 {
		t.Fatalf("%d SYNs forwarded, want 4 (the rest dropped without a RST)", len(w))
	}
	handshake(t, m, dev, cliAP)
	if s := m.Stats(); s.FlowsActive != 5 {
		t.Fatalf("another source's connection: %d flows, want 5", s.FlowsActive)
	}
}

// One source holds at most MaxFlowsPerSource flows, established or not: its
// further SYNs get a RST (counted as flow_quota), other sources are
// unaffected, and a flow that ends frees a place. Without it one client
// could fill a node's client limit with anycast connections, and the node
// would then answer forked connections otherwise than the other DCs.
func TestFlowQuotaPerSource(t *testing.T) {
	cfg := testConfig()
	cfg.MaxFlowsPerSource = 3
	dev := newFakeDev(false, true)
	m, _ := newUnit(t, cfg, dev)
	hog := netip.MustParseAddr("10.200.1.9")
	for p := range 3 {
		handshake(t, m, dev, netip.AddrPortFrom(hog, uint16(30000+p)))
	}
	feed(m, nil, synFrom(netip.AddrPortFrom(hog, 30003), vipAny, 1))
	out := dev.take()
	if len(out) != 1 || header.TCP(out[0][virtio.HdrLen+20:]).Flags() != header.TCPFlagRst|header.TCPFlagAck || m.Drop(ReasonFlowQuota) != 1 {
		t.Fatalf("4th connection of one source: %d packets, flow_quota %d; want a RST and 1", len(out), m.Drop(ReasonFlowQuota))
	}
	handshake(t, m, dev, cliAP)
	if s := m.Stats(); s.FlowsActive != 4 {
		t.Fatalf("another source's connection: %d flows, want 4", s.FlowsActive)
	}
	// One of the source's flows ends: a place is free again.
	var victim int32 = -1
	for i := range m.flows.tab.slab {
		if f := &m.flows.tab.slab[i]; f.used && f.key.cli == hog.As4() {
			victim = int32(i)
			break
		}
	}
	m.flows.Lock()
	m.removeFlow(victim)
	m.flows.Unlock()
	handshake(t, m, dev, netip.AddrPortFrom(hog, 30004))
	if got := m.flows.tab.bySrc[hog.As4()]; got != 3 || m.Drop(ReasonFlowQuota) != 1 {
		t.Fatalf("source holds %d flows (want 3), flow_quota %d (want 1)", got, m.Drop(ReasonFlowQuota))
	}
}

// A full table evicts the oldest half-open flow for a new SYN, never an
// established one; with only established flows, the SYN gets a RST.
func TestFullTableEvictsHalfOpenFirst(t *testing.T) {
	cfg := testConfig()
	cfg.MaxFlows = 3
	dev := newFakeDev(false, true)
	m, _ := newUnit(t, cfg, dev)
	est := handshake(t, m, dev, cliAP)
	flooder := netip.MustParseAddr("10.66.0.1")
	feed(m, nil, synFrom(netip.AddrPortFrom(flooder, 20000), vipAny, 1))
	feed(m, nil, synFrom(netip.AddrPortFrom(flooder, 20001), vipAny, 1))
	dev.take()
	legit := netip.AddrPortFrom(netip.MustParseAddr("10.200.1.3"), 40000)
	handshake(t, m, dev, legit)
	if m.c.halfOpenEvicted.Load() != 1 || m.Drop(ReasonTableFull) != 0 {
		t.Fatalf("evicted %d, table_full %d; want 1 and 0", m.c.halfOpenEvicted.Load(), m.Drop(ReasonTableFull))
	}
	states := map[string]string{}
	for _, f := range m.Flows(0) {
		states[f.Client] = f.State
	}
	if states[cliAP.String()] != "established" || states[legit.String()] != "established" || states["10.66.0.1:20001"] != "syn-sent" || len(states) != 3 {
		t.Fatalf("flows after eviction: %v (established flow on %s)", states, est)
	}
	// Full of established flows but the flooder's last: evicted too; then
	// a SYN meets only established flows and gets a RST.
	handshake(t, m, dev, netip.AddrPortFrom(netip.MustParseAddr("10.200.1.4"), 40000))
	feed(m, nil, synFrom(netip.AddrPortFrom(netip.MustParseAddr("10.200.1.5"), 40000), vipAny, 7))
	out := dev.take()
	if len(out) != 1 || header.TCP(out[0][virtio.HdrLen+20:]).Flags() != header.TCPFlagRst|header.TCPFlagAck || m.Drop(ReasonTableFull) != 1 {
		t.Fatalf("SYN to a table of established flows: %d packets, table_full %d; want a RST", len(out), m.Drop(ReasonTableFull))
	}
}

// Issue 11: 262,144 SYN-only flows from 4 addresses filled the default
// table, and a legitimate client then got a RST. Now the flood holds at
// most 4 quotas of state, and the legitimate client connects.
func TestHalfOpenFloodThenLegitimateClientConnects(t *testing.T) {
	dev := newFakeDev(false, false)
	m, clk := newUnit(t, testConfig(), dev)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const total = 262144
	var batch [8][]byte
	for i := 0; i < total; i += len(batch) {
		for j := range batch {
			k := i + j
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 66, 0, byte(k % 4)}), uint16(1024+k/4%64000))
			batch[j] = synFrom(src, vipAny, uint32(k))
		}
		feed(m, nil, batch[:]...)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	s := m.Stats()
	if s.FlowsActive != 4*DefaultMaxHalfOpenPerSource {
		t.Fatalf("flood left %d flows, want %d (4 sources' quotas)", s.FlowsActive, 4*DefaultMaxHalfOpenPerSource)
	}
	t.Logf("%d SYNs from 4 addresses: %d flows held, %d dropped over quota, heap %+d bytes (%.2f bytes per SYN)",
		total, s.FlowsActive, m.Drop(ReasonHalfOpenQuota), int64(after.HeapAlloc)-int64(before.HeapAlloc),
		float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/total)
	dev2 := newFakeDev(false, true)
	m.dev = dev2
	handshake(t, m, dev2, cliAP)
	if fl := m.Flows(0); !hasState(fl, cliAP.String(), "established") {
		t.Fatal("legitimate client did not connect after the flood")
	}
	// The flood's state goes after the half-open timeout.
	clk.Add(DefaultHalfOpenTimeout)
	m.Expire(clk.Now())
	if s := m.Stats(); s.FlowsActive != 1 {
		t.Fatalf("%d flows after the half-open timeout, want 1", s.FlowsActive)
	}
}

func hasState(fl []FlowInfo, client, state string) bool {
	for _, f := range fl {
		if f.Client == client && f.State == state {
			return true
		}
	}
	return false
}

// RFC 5961 on an anycast flow: a blind RST behind the node's
// acknowledgement is dropped, one ahead of it is passed to the node (which
// answers with a challenge ACK) without removing the flow, and only the
// exact one removes it.
func TestBlindRSTKeepsAnycastFlow(t *testing.T) {
	dev := newFakeDev(false, true)
	m, _ := newUnit(t, testConfig(), dev)
	node := handshake(t, m, dev, cliAP)
	// The node acknowledges 100 bytes: its rcv.nxt is 201.
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 101, ack: 5001, payload: make([]byte, 100)}))
	feed(m, nil, mkTCP(tcpSpec{src: node, dst: cliAP, flags: header.TCPFlagAck, seq: 5001, ack: 201}))
	dev.take()
	rst := func(seq uint32) {
		feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagRst, seq: seq}))
	}
	rst(150)
	if w := dev.take(); len(w) != 0 || m.Drop(ReasonRSTOutOfWindow) != 1 {
		t.Fatalf("RST behind rcv.nxt: %d written, rst_out_of_window %d; want dropped", len(w), m.Drop(ReasonRSTOutOfWindow))
	}
	rst(90000)
	if w := dev.take(); len(w) != 1 || dstOf(t, w[0]) != node || m.c.rstPassed.Load() != 1 {
		t.Fatalf("RST ahead of rcv.nxt: %d written, passed %d; want passed to the node", len(w), m.c.rstPassed.Load())
	}
	if fl := m.Flows(0); !hasState(fl, cliAP.String(), "established") {
		t.Fatalf("a blind RST removed the flow: %+v", fl)
	}
	rst(201)
	if w := dev.take(); len(w) != 1 || m.Stats().FlowsActive != 0 || m.Stats().FlowsReset != 1 {
		t.Fatalf("exact RST: %d written, %d flows left; want forwarded and the flow removed", len(w), m.Stats().FlowsActive)
	}
}

// After a restart (a new Middlebox), a packet of an anycast connection it
// never saw is re-adopted on the node the hash chose before; a packet of a
// forked connection gets a RST the client accepts (seq = its ack).
func TestRestartAdoptsAnycastResetsForked(t *testing.T) {
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	dev := newFakeDev(false, true)
	m, _ := newUnit(t, cfg, dev)
	node := handshake(t, m, dev, cliAP)
	m.Close()

	dev2 := newFakeDev(false, true)
	m2, _ := newUnit(t, cfg, dev2)
	feed(m2, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 101, ack: 5001, payload: []byte("get k\r\n")}))
	out := dev2.take()
	if len(out) != 1 || dstOf(t, out[0]) != node {
		t.Fatalf("after restart: %d packets, want 1 to %s", len(out), node)
	}
	feed(m2, nil, mkTCP(tcpSpec{src: node, dst: cliAP, flags: header.TCPFlagAck, seq: 5001, ack: 108, payload: []byte("$-1\r\n")}))
	if out := dev2.take(); len(out) != 1 || !hasState(m2.Flows(0), cliAP.String(), "established") {
		t.Fatalf("node's reply to the adopted flow: %d packets, flows %+v", len(out), m2.Flows(0))
	}

	fk := netip.AddrPortFrom(testVIP, 6379)
	feed(m2, nil, mkTCP(tcpSpec{src: cliAP, dst: fk, flags: header.TCPFlagAck, seq: 300, ack: 7777, payload: []byte("x")}))
	out = dev2.take()
	if len(out) != 1 {
		t.Fatalf("forked packet after restart: %d packets written, want a RST", len(out))
	}
	tcp := validTCP(t, out[0][virtio.HdrLen:])
	if tcp.Flags() != header.TCPFlagRst || tcp.SequenceNumber() != 7777 || dstOf(t, out[0]) != cliAP {
		t.Fatalf("RST flags %v seq %d to %s; want RST seq 7777 to the client", tcp.Flags(), tcp.SequenceNumber(), dstOf(t, out[0]))
	}
}

// forkedFlow opens a forked flow from cli on port 6379 through both DCs.
func forkedFlow(t *testing.T, m *Middlebox, dev *fakeDev, cli netip.AddrPort) {
	t.Helper()
	fk := netip.AddrPortFrom(testVIP, 6379)
	feed(m, nil, synFrom(cli, fk, 100))
	out := dev.take()
	if len(out) != 2 {
		t.Fatalf("forked SYN: %d copies, want 2", len(out))
	}
	for _, o := range out {
		n := dstOf(t, o)
		feed(m, nil, mkTCP(tcpSpec{src: n, dst: cli, flags: header.TCPFlagSyn | header.TCPFlagAck, seq: 9000, ack: 101}))
	}
	out = dev.take()
	if len(out) != 1 {
		t.Fatalf("merged SYN-ACK: %d packets, want 1", len(out))
	}
	tcp := header.TCP(out[0][virtio.HdrLen+20:])
	feed(m, nil, mkTCP(tcpSpec{src: cli, dst: fk, flags: header.TCPFlagAck, seq: 101, ack: tcp.SequenceNumber() + 1}))
	dev.take()
}

// Issue 11: 200 forked flows that must reset their client when a DC dies
// (min replicas 2) got 5 RSTs out and 584 no_buffer drops. Now a timer
// pass writes what it has made whenever its buffers run short: every RST
// is delivered.
func TestForkedResetsAllDelivered(t *testing.T) {
	cfg := testConfig()
	cfg.AnycastPorts = nil
	cfg.MulticastPorts = []uint16{6379}
	cfg.Fork.MinReplicas = 2
	dev := newFakeDev(false, true)
	m, clk := newUnit(t, cfg, dev)
	const flows = 200
	for i := range flows {
		forkedFlow(t, m, dev, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, 2, byte(i % 250)}), uint16(30000+i)))
	}
	if s := m.Stats(); s.FlowsActive != flows {
		t.Fatalf("%d flows open, want %d", s.FlowsActive, flows)
	}
	if err := m.SetNodeLive(dub1, false); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Millisecond)
	m.Expire(clk.Now())
	toClients := 0
	for _, o := range dev.take() {
		pkt := o[virtio.HdrLen:]
		if header.TCP(pkt[20:]).Flags()&header.TCPFlagRst != 0 && netip.AddrFrom4(header.IPv4(pkt).SourceAddress().As4()) == testVIP {
			toClients++
		}
	}
	if toClients != flows || m.Drop(ReasonNoBuffer) != 0 {
		t.Fatalf("%d RSTs to clients, %d no_buffer drops; want %d and 0", toClients, m.Drop(ReasonNoBuffer), flows)
	}
}

// With the default (safe) detector, one client's burst of identical SYNs
// to either port takes no DC down; the paper's detector, kept for
// reproduction, does as the paper says.
func TestSYNBurstDetectors(t *testing.T) {
	for _, c := range []struct {
		mode     failover.Mode
		port     uint16
		wantDown bool
	}{
		{failover.Safe, anyPort, false}, {failover.Safe, 6379, false},
		{failover.Fast, anyPort, false}, {failover.Fast, 6379, false},
		{failover.Paper, anyPort, true}, {failover.Paper, 6379, true},
	} {
		t.Run(fmt.Sprintf("%v/%d", c.mode, c.port), func(t *testing.T) {
			cfg := testConfig()
			cfg.MulticastPorts = []uint16{6379}
			det := failover.DefaultConfig()
			det.Mode = c.mode
			cfg.Failover = &FailoverConfig{Detector: det}
			dev := newFakeDev(false, true)
			m, clk := newUnit(t, cfg, dev)
			victim := handshake(t, m, dev, netip.AddrPortFrom(netip.MustParseAddr("10.200.1.9"), 41000))
			attacker := netip.AddrPortFrom(netip.MustParseAddr("10.200.1.66"), 50000)
			for range 6 {
				feed(m, nil, synFrom(attacker, netip.AddrPortFrom(testVIP, c.port), 1))
				clk.Add(10 * time.Millisecond)
			}
			clk.Add(3 * time.Second)
			m.Expire(clk.Now())
			down := 0
			for _, d := range m.DCs() {
				if !d.Live {
					down++
				}
			}
			if (down > 0) != c.wantDown {
				t.Fatalf("%d DCs down, want down=%v", down, c.wantDown)
			}
			if !c.wantDown && !hasState(m.Flows(0), "10.200.1.9:41000", "established") {
				t.Fatalf("victim's flow on %s gone: %+v", victim, m.Flows(0))
			}
		})
	}
}

// /flows pages the table one chunk of the lock at a time and caps limit
// (issue 11: /flows?limit=0 at a full table held the data path 149 ms).
func TestFlowsPagesAndCapsLimit(t *testing.T) {
	cfg := testConfig()
	dev := newFakeDev(false, false)
	m, _ := newUnit(t, cfg, dev)
	const n = 1300
	for i := range n {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 77, byte(i / 200), byte(i % 200)}), 40000)
		feed(m, nil, synFrom(src, vipAny, 1))
	}
	seen := map[string]bool{}
	from, pages := 0, 0
	for from >= 0 {
		var page []FlowInfo
		page, from = m.FlowsPage(from, 300)
		if len(page) > 300 {
			t.Fatalf("page of %d flows, limit 300", len(page))
		}
		for _, f := range page {
			if seen[f.Client] {
				t.Fatalf("flow %s on two pages", f.Client)
			}
			seen[f.Client] = true
		}
		pages++
	}
	if len(seen) != n || pages != 5 {
		t.Fatalf("%d flows in %d pages, want %d in 5", len(seen), pages, n)
	}
	h := m.Handler()
	get := func(url string) (int, []FlowInfo, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
		var fl []FlowInfo
		json.Unmarshal(rec.Body.Bytes(), &fl)
		return rec.Code, fl, rec.Header().Get("X-Flows-Next")
	}
	for _, url := range []string{"/flows", "/flows?limit=0", "/flows?limit=100000"} {
		if code, fl, next := get(url); code != 200 || len(fl) != MaxFlowsPage || next == "" {
			t.Fatalf("%s: %d, %d flows, next %q; want 200, %d flows and a next page", url, code, len(fl), next, MaxFlowsPage)
		}
	}
	_, _, next := get("/flows")
	if code, fl, last := get("/flows?from=" + next); code != 200 || len(fl) != n-MaxFlowsPage || last != "" {
		t.Fatalf("second page: %d, %d flows, next %q", code, len(fl), last)
	}
	for _, url := range []string{"/flows?limit=-1", "/flows?limit=x", "/flows?from=-2"} {
		if code, _, _ := get(url); code != 400 {
			t.Fatalf("%s: %d, want 400", url, code)
		}
	}
}

// Issue 9 item 8: a dead node's branches leave forked flows as soon as the
// node is declared down (the timer goroutine's wake-up pass), not at the
// next tick, so the survivors' held reply bytes reach the client at once.
func TestDeadBranchRemovedOnWake(t *testing.T) {
	cfg := testConfig()
	cfg.AnycastPorts = nil
	cfg.MulticastPorts = []uint16{6379}
	cfg.TickInterval = time.Hour // the sweeper's ticks (1 s) are not what removes it
	dev := newFakeDev(false, true)
	m, clk := newUnit(t, cfg, dev)
	forkedFlow(t, m, dev, netip.MustParseAddrPort("10.200.2.7:30000"))
	if err := m.SetNodeLive(dub1, false); err != nil {
		t.Fatal(err)
	}
	m.probeTimers(clk.Now()) // what the wake-up runs (the sweeper may run it first)
	for _, o := range dev.take() {
		if dstOf(t, o).Addr() == dub1.Addr() && header.TCP(o[virtio.HdrLen+20:]).Flags()&header.TCPFlagRst != 0 {
			return
		}
	}
	t.Fatal("no RST to the dead node's branch after the wake-up pass")
}
