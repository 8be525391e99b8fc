package middlebox

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/netstackio"
	"github.com/sdnkvs/sdnkvs/netstackio/packet/packettest"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// fakeDev is a Device the test feeds by hand: Read blocks until Close;
// Write records copies of what is written (when record is set).
type fakeDev struct {
	offload bool
	record  bool
	mu      sync.Mutex
	written [][]byte // vnet header + packet
	writes  int
	done    chan struct{}
	once    sync.Once
}

func newFakeDev(offload, record bool) *fakeDev {
	return &fakeDev{offload: offload, record: record, done: make(chan struct{})}
}

func (d *fakeDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-d.done
	return 0, netstackio.ErrClosed
}

func (d *fakeDev) Write(bufs [][]byte, offset int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes += len(bufs)
	if d.record {
		for _, b := range bufs {
			d.written = append(d.written, append([]byte(nil), b[offset-virtio.HdrLen:]...))
		}
	}
	return len(bufs), nil
}

func (d *fakeDev) take() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.written
	d.written = nil
	return w
}

func (d *fakeDev) BatchSize() int { return 8 }
func (d *fakeDev) MTU() int       { return 1500 }
func (d *fakeDev) Offload() bool  { return d.offload }
func (d *fakeDev) Name() string   { return "fake" }
func (d *fakeDev) Close() error   { d.once.Do(func() { close(d.done) }); return nil }

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newUnit(t *testing.T, cfg Config, dev *fakeDev) (*Middlebox, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	cfg.Now = clk.Now
	m, err := New(dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, clk
}

// tcpSpec describes a packet built with gVisor's header package,
// independently of netstackio/packet.
type tcpSpec struct {
	src, dst netip.AddrPort
	flags    header.TCPFlags
	seq, ack uint32
	payload  []byte
	opts     []byte
}

func mkTCP(s tcpSpec) []byte {
	return packettest.Build(packettest.Spec{Src: s.src, Dst: s.dst, Seq: s.seq, Ack: s.ack, Flags: uint8(s.flags),
		Window: 65535, Options: s.opts, Payload: s.payload}, virtio.HdrLen)[virtio.HdrLen:]
}

func fixTCPChecksum(pkt []byte) {
	ip := header.IPv4(pkt)
	tcp := header.TCP(pkt[ip.HeaderLength():])
	tcp.SetChecksum(0)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, sum))
}

// validTCP checks pkt's checksums with gVisor's header package.
func validTCP(t *testing.T, pkt []byte) header.TCP {
	t.Helper()
	ip := header.IPv4(pkt)
	if !ip.IsValid(len(pkt)) || !ip.IsChecksumValid() {
		t.Fatalf("bad IPv4 header: % x", pkt[:20])
	}
	tcp := header.TCP(pkt[ip.HeaderLength():ip.TotalLength()])
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	if checksum.Checksum(tcp, sum) != 0xffff {
		t.Fatalf("bad TCP checksum")
	}
	return tcp
}

// feed puts packets into the middlebox's batch buffers (each with the
// given virtio-net header, nil for zeros) and processes the batch.
func feed(m *Middlebox, vnet []byte, pkts ...[]byte) {
	for i, p := range pkts {
		h := virtio.At(m.dp.bufs[i], m.offset)
		h.Clear()
		copy(h, vnet)
		m.dp.sizes[i] = copy(m.dp.bufs[i][m.offset:], p)
	}
	m.processBatch(len(pkts))
}

var (
	cliAP  = netip.AddrPortFrom(testClient, 40000)
	vipAny = netip.AddrPortFrom(testVIP, anyPort)
)

func TestRewriteAndLifecycle(t *testing.T) {
	dev := newFakeDev(false, true)
	m, clk := newUnit(t, testConfig(), dev)

	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagSyn, seq: 100}))
	out := dev.take()
	if len(out) != 1 {
		t.Fatalf("SYN: %d packets written, want 1", len(out))
	}
	pkt := out[0][virtio.HdrLen:]
	tcp := validTCP(t, pkt)
	node := netip.AddrPortFrom(netip.AddrFrom4(header.IPv4(pkt).DestinationAddress().As4()), tcp.DestinationPort())
	if node != syd1 && node != syd2 {
		t.Fatalf("SYN went to %s, want a sydney node", node)
	}
	if src := header.IPv4(pkt).SourceAddress().As4(); netip.AddrFrom4(src) != testClient || tcp.SourcePort() != cliAP.Port() {
		t.Fatal("client address not preserved (transparency)")
	}

	// SYN-ACK from the node: SNAT back to the VIP.
	feed(m, nil, mkTCP(tcpSpec{src: node, dst: cliAP, flags: header.TCPFlagSyn | header.TCPFlagAck, seq: 5000, ack: 101}))
	out = dev.take()
	pkt = out[0][virtio.HdrLen:]
	tcp = validTCP(t, pkt)
	if got := netip.AddrFrom4(header.IPv4(pkt).SourceAddress().As4()); got != testVIP || tcp.SourcePort() != anyPort {
		t.Fatalf("reply source %s:%d, want %s", got, tcp.SourcePort(), vipAny)
	}
	// The node's SYN-ACK alone does not establish the flow; the client's
	// ACK does.
	if fl := m.Flows(0); len(fl) != 1 || fl[0].State != "syn-received" || fl[0].Kind != "anycast" || fl[0].DC != "sydney" {
		t.Fatalf("flows = %+v", fl)
	}
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 101, ack: 5001}))
	dev.take()
	if fl := m.Flows(0); len(fl) != 1 || fl[0].State != "established" {
		t.Fatalf("after the client's ACK: flows = %+v", fl)
	}

	// Idle timeout.
	clk.Add(DefaultIdleTimeout - time.Second)
	if n := m.Expire(clk.Now()); n != 0 {
		t.Fatalf("expired %d flows before the idle timeout", n)
	}
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 101, ack: 5001, payload: []byte("x")}))
	clk.Add(DefaultIdleTimeout - time.Second)
	if n := m.Expire(clk.Now()); n != 0 {
		t.Fatal("a packet did not refresh the idle timer")
	}
	clk.Add(time.Second)
	if n := m.Expire(clk.Now()); n != 1 {
		t.Fatalf("idle flow not expired (%d)", n)
	}
	dev.take()
	// After expiry the flow is unknown: its next packet re-adopts it on
	// the same node (the choice is a hash), half-open until the node
	// answers; unanswered, it goes after the half-open timeout.
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 102, ack: 5001}))
	out = dev.take()
	if len(out) != 1 {
		t.Fatalf("packet of an expired flow: %d packets written, want 1 (re-adopted)", len(out))
	}
	if got := netip.AddrFrom4(header.IPv4(out[0][virtio.HdrLen:]).DestinationAddress().As4()); got != node.Addr() {
		t.Fatalf("re-adopted flow sent to %s, want %s", got, node.Addr())
	}
	if fl := m.Flows(0); len(fl) != 1 || fl[0].State != "adopted" || m.c.flowsAdopted.Load() != 1 {
		t.Fatalf("re-adopted: flows %+v, adopted %d", fl, m.c.flowsAdopted.Load())
	}
	clk.Add(DefaultHalfOpenTimeout)
	if n := m.Expire(clk.Now()); n != 1 {
		t.Fatalf("unanswered adopted flow not removed after the half-open timeout (%d)", n)
	}

	// FIN both ways, then linger.
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagSyn, seq: 100}))
	feed(m, nil, mkTCP(tcpSpec{src: node, dst: cliAP, flags: header.TCPFlagSyn | header.TCPFlagAck, seq: 5000, ack: 101}))
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 101, ack: 5001}))
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagFin | header.TCPFlagAck, seq: 101, ack: 5001}))
	feed(m, nil, mkTCP(tcpSpec{src: node, dst: cliAP, flags: header.TCPFlagFin | header.TCPFlagAck, seq: 5001, ack: 102}))
	if fl := m.Flows(0); len(fl) != 1 || fl[0].State != "half-closed" {
		t.Fatalf("before the last ACK: %+v", fl)
	}
	clk.Add(time.Minute)
	if n := m.Expire(clk.Now()); n != 0 {
		t.Fatal("flow removed before its last FIN was acknowledged")
	}
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 102, ack: 5002}))
	if fl := m.Flows(0); len(fl) != 1 || fl[0].State != "closing" {
		t.Fatalf("after both FINs: %+v", fl)
	}
	clk.Add(DefaultFinLinger)
	if n := m.Expire(clk.Now()); n != 1 {
		t.Fatal("closed flow not removed after its linger")
	}

	// RST from the node removes the flow at once.
	dev.take()
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagSyn, seq: 100}))
	feed(m, nil, mkTCP(tcpSpec{src: node, dst: cliAP, flags: header.TCPFlagRst | header.TCPFlagAck, ack: 101}))
	if s := m.Stats(); s.FlowsActive != 0 {
		t.Fatalf("flow survived a RST: %d active", s.FlowsActive)
	}
	out = dev.take()
	if len(out) != 2 {
		t.Fatalf("%d packets written, want 2 (SYN, RST)", len(out))
	}
	validTCP(t, out[1][virtio.HdrLen:])
}

func TestSuperPacketPassesUnsplit(t *testing.T) {
	dev := newFakeDev(true, true)
	m, _ := newUnit(t, testConfig(), dev)
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagSyn, seq: 100}))
	syn := dev.take()[0][virtio.HdrLen:]
	node := netip.AddrPortFrom(netip.AddrFrom4(header.IPv4(syn).DestinationAddress().As4()), header.TCP(syn[20:]).DestinationPort())

	// A 64 KB TSO packet with a partial checksum, as an offload TUN hands it over.
	payload := make([]byte, 65535-40)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	pkt := mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck | header.TCPFlagPsh, seq: 101, ack: 1, payload: payload})
	ip := header.IPv4(pkt)
	header.TCP(pkt[20:]).SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(pkt)-20)))
	vnet := make(virtio.Hdr, virtio.HdrLen)
	vnet.SetFlags(virtio.FlagNeedsCsum)
	vnet.SetGSOType(virtio.GSOTCPv4)
	vnet.SetGSOSize(1448)
	vnet.SetHdrLen(40)
	vnet.SetCsumStart(20)
	vnet.SetCsumOffset(16)
	feed(m, vnet, pkt)
	out := dev.take()
	if len(out) != 1 {
		t.Fatalf("%d packets written, want 1 super-packet", len(out))
	}
	h := virtio.Hdr(out[0][:virtio.HdrLen])
	got := out[0][virtio.HdrLen:]
	if len(got) != len(pkt) || h.GSOType() != virtio.GSOTCPv4 || h.GSOSize() != 1448 || !h.NeedsCsum() {
		t.Fatalf("super-packet changed: len %d (want %d), gso %d/%d", len(got), len(pkt), h.GSOType(), h.GSOSize())
	}
	if d := netip.AddrFrom4(header.IPv4(got).DestinationAddress().As4()); d != node.Addr() {
		t.Fatalf("dst %s, want %s", d, node.Addr())
	}
	// Segment it as the kernel would and check every segment independently.
	segs := 0
	scratch := make([]byte, 1500)
	err := netstackio.SoftwareOffload(h, got, scratch, func(seg []byte) error {
		validTCP(t, seg)
		segs++
		return nil
	})
	if err != nil || segs != (len(payload)+1447)/1448 {
		t.Fatalf("segmentation: %v, %d segments", err, segs)
	}
}

func TestHotPathAllocatesNothing(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testHotPathAllocs(t, testConfig()) })
	t.Run("detector", func(t *testing.T) {
		cfg := testConfig()
		cfg.Failover = &FailoverConfig{Detector: failover.Config{Mode: failover.Fast}}
		testHotPathAllocs(t, cfg)
	})
}

func testHotPathAllocs(t *testing.T, cfg Config) {
	dev := newFakeDev(false, false)
	m, _ := newUnit(t, cfg, dev)
	feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagSyn, seq: 100}))
	var node netip.AddrPort
	for _, f := range m.Flows(0) {
		node = netip.MustParseAddrPort(f.Nodes[0])
	}
	fwd := mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 101, ack: 1, payload: make([]byte, 1400)})
	rev := mkTCP(tcpSpec{src: node, dst: cliAP, flags: header.TCPFlagAck, seq: 1, ack: 1501, payload: make([]byte, 1400)})
	allocs := testing.AllocsPerRun(1000, func() { feed(m, nil, fwd, rev, fwd, rev) })
	if allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
	if d := m.Stats().Drops; d["unknown_flow"]+d["bad_tcp_checksum"] != 0 {
		t.Fatalf("steady-state packets dropped: %v", d)
	}
}

func TestBadPacketsAreCountedUnit(t *testing.T) {
	dev := newFakeDev(false, true)
	m, _ := newUnit(t, testConfig(), dev)
	good := mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagSyn, seq: 100})
	cases := []struct {
		name   string
		reason Reason
		pkt    func() []byte
	}{
		{"empty", ReasonTruncated, func() []byte { return nil }},
		{"short", ReasonTruncated, func() []byte { return good[:12] }},
		{"cut", ReasonTruncated, func() []byte { return good[:30] }},
		{"garbage", ReasonNotIP, func() []byte { return []byte{0x01, 0xff, 0x17, 0x42, 0, 0, 9} }},
		{"ipv6", ReasonIPv6, func() []byte { b := make([]byte, 60); b[0] = 0x60; return b }},
		{"ihl", ReasonBadIPHeader, func() []byte { b := clone(good); b[0] = 0x44; return b }},
		{"ipcsum", ReasonBadIPChecksum, func() []byte { b := clone(good); b[10] ^= 0xff; return b }},
		{"fragment", ReasonFragment, func() []byte {
			b := clone(good)
			header.IPv4(b).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
			fixIP(b)
			return b
		}},
		{"doff", ReasonBadTCPHeader, func() []byte { b := clone(good); b[32] = 0x20; fixTCPChecksum(b); return b }},
		{"tcpcsum", ReasonBadTCPChecksum, func() []byte { b := clone(good); b[36] ^= 1; return b }},
		{"unknown-rst", ReasonUnknownFlow, func() []byte {
			return mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagRst, seq: 1})
		}},
		{"unknown-no-ack", ReasonUnknownFlow, func() []byte {
			return mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagPsh, seq: 1, payload: []byte("x")})
		}},
		{"spoofed-node", ReasonSpoofedNode, func() []byte {
			return mkTCP(tcpSpec{src: netip.AddrPortFrom(syd1.Addr(), 40000), dst: vipAny, flags: header.TCPFlagSyn, seq: 1})
		}},
		{"unknown-reply", ReasonUnknownFlow, func() []byte {
			return mkTCP(tcpSpec{src: syd1, dst: cliAP, flags: header.TCPFlagAck, seq: 1, ack: 1})
		}},
		{"transit", ReasonNotForVIP, func() []byte {
			return mkTCP(tcpSpec{src: cliAP, dst: netip.MustParseAddrPort("10.9.9.9:80"), flags: header.TCPFlagSyn})
		}},
	}
	for _, c := range cases {
		before := m.Drop(c.reason)
		feed(m, nil, c.pkt())
		if got := m.Drop(c.reason); got != before+1 {
			t.Errorf("%s: drops[%s] = %d, want %d", c.name, c.reason, got, before+1)
		}
		if w := dev.take(); len(w) != 0 {
			t.Errorf("%s: %d packets written, want none", c.name, len(w))
		}
	}
	if s := m.Stats(); s.FlowsActive != 0 {
		t.Errorf("bad packets created %d flows", s.FlowsActive)
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func fixIP(b []byte) {
	ip := header.IPv4(b)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
}
