package middlebox

import (
	"errors"
	"net/http"
	"os"
	"sync/atomic"

	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio"
	"github.com/sdnkvs/sdnkvs/netstackio/netstacktest"
)

var (
	testVIP    = netip.MustParseAddr("10.200.100.1")
	testClient = netip.MustParseAddr("10.200.1.2")
	syd1       = netip.MustParseAddrPort("10.210.1.11:6379")
	syd2       = netip.MustParseAddrPort("10.210.1.12:6379")
	dub1       = netip.MustParseAddrPort("10.210.2.11:6379")
)

const anyPort = 6380

// rig is a memnet with a client host, two DC hosts (sydney with two node
// addresses, dublin with one) each running an echo-ish server on 6379, and
// a middlebox in between.
type rig struct {
	tr               *tracer
	mbEnd, routerEnd netstackio.Device
	net              *netstacktest.Network
	mb               *Middlebox
	client           *netstacktest.NetHost
	dcs              map[string]*netstacktest.NetHost
	runErr           chan error
}

func testConfig() Config {
	return Config{
		FinLinger:    200 * time.Millisecond,
		VIP:          testVIP,
		AnycastPorts: []uint16{anyPort},
		DCs: []failover.DC{
			{Name: "sydney", Nodes: []netip.AddrPort{syd1, syd2}},
			{Name: "dublin", Nodes: []netip.AddrPort{dub1}},
		},
	}
}

func newRig(t *testing.T, cfg Config, serve func(net.Conn)) *rig {
	t.Helper()
	return newRigOpts(t, cfg, serve, netstacktest.NetworkOptions{})
}

func newRigOpts(t *testing.T, cfg Config, serve func(net.Conn), opts netstacktest.NetworkOptions) *rig {
	t.Helper()
	tr := &tracer{}
	opts.Trace = tr.add
	n := netstacktest.NewNetwork(opts)
	t.Cleanup(n.Close)
	mbEnd, routerEnd := netstacktest.MemPipe(netstacktest.PipeOptions{NameA: "mb", NameB: "router"})
	m, err := New(mbEnd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{mbEnd: mbEnd, routerEnd: routerEnd, tr: tr, net: n, mb: m, dcs: map[string]*netstacktest.NetHost{}, runErr: make(chan error, 1)}
	go func() { r.runErr <- m.Run() }()
	t.Cleanup(func() {
		m.Close()
		if err := <-r.runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	var policy []netip.AddrPort
	for _, dc := range cfg.DCs {
		var addrs []netip.Addr
		for _, ap := range dc.Nodes {
			addrs = append(addrs, ap.Addr())
			policy = append(policy, ap)
		}
		h, err := n.AddHost(dc.Name, addrs...)
		if err != nil {
			t.Fatal(err)
		}
		r.dcs[dc.Name] = h
		ln, err := h.ListenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), dc.Nodes[0].Port()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go serve(c)
			}
		}()
	}
	if r.client, err = n.AddHost("client", testClient); err != nil {
		t.Fatal(err)
	}
	n.AttachMiddlebox(routerEnd, testVIP, policy...)
	return r
}

// whoServer answers each connection with the node address it was accepted
// on, then echoes until EOF.
func whoServer(c net.Conn) {
	defer c.Close()
	c.Write([]byte(c.LocalAddr().String() + "\n"))
	io.Copy(c, c)
}

func (r *rig) dial(t *testing.T, port uint16) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.client.DialTCP(ctx, netip.AddrPortFrom(testVIP, port))
	if err != nil {
		t.Fatalf("dial VIP:%d: %v", port, err)
	}
	t.Cleanup(func() { c.Close() })
	// A deadline, not a speed target: 4 MiB each way under -race on a
	// loaded 2-core machine took longer than 20 s.
	c.SetDeadline(time.Now().Add(90 * time.Second))
	return c
}

// whoAnswers connects to the anycast port and returns the node that served.
func (r *rig) whoAnswers(t *testing.T) string {
	t.Helper()
	c := r.dial(t, anyPort)
	line := readLine(t, c)
	c.Close()
	return line
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	line := make([]byte, 0, 32)
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("read greeting: %v", err)
		}
		if b[0] == '\n' {
			return string(line)
		}
		line = append(line, b[0])
	}
}

func TestAnycastTransferThroughMemnet(t *testing.T) {
	const size = 4 << 20
	r := newRig(t, testConfig(), func(c net.Conn) {
		defer c.Close()
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		c.Write(h.Sum(nil))
		// Then send size bytes of deterministic data back.
		rng := rand.New(rand.NewPCG(2, 3))
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	c := r.dial(t, anyPort)
	up := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range up {
		up[i] = byte(rng.Uint32())
	}
	go func() {
		c.Write(up)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		r.tr.dump(t)
		t.Logf("now %s (trace above)", time.Now().Format("05.000"))
		for _, h := range append([]*netstacktest.NetHost{r.client}, r.dcs["sydney"], r.dcs["dublin"]) {
			st := h.Stack.Stats()
			t.Logf("%s: tcp csum errors %d invalid %d retransmits %d timeouts %d segs sent %d recv %d; ip malformed %d", h.Name,
				st.TCP.ChecksumErrors.Value(), st.TCP.InvalidSegmentsReceived.Value(), st.TCP.Retransmits.Value(), st.TCP.Timeouts.Value(),
				st.TCP.SegmentsSent.Value(), st.TCP.ValidSegmentsReceived.Value(), st.IP.MalformedPacketsReceived.Value())
		}
		t.Logf("mb end %+v router end %+v", r.mbEnd.(netstackio.StatsReporter).Stats(), r.routerEnd.(netstackio.StatsReporter).Stats())
		t.Fatalf("read after %d bytes: %v; middlebox %+v; router %+v", len(got), err, r.mb.Stats(), r.net.Stats())
	}
	want := sha256.Sum256(up)
	if len(got) < 32 || !bytes.Equal(got[:32], want[:]) {
		t.Fatalf("server's hash of the upload differs (got %d bytes back)", len(got))
	}
	rng = rand.New(rand.NewPCG(2, 3))
	down := make([]byte, size)
	for i := range down {
		down[i] = byte(rng.Uint32())
	}
	if !bytes.Equal(got[32:], down) {
		t.Fatalf("download: got %d bytes, want %d identical bytes", len(got)-32, size)
	}
	c.Close()
	s := r.mb.Stats()
	if s.FlowsCreated != 1 {
		t.Errorf("flows created = %d, want 1", s.FlowsCreated)
	}
	for reason, v := range s.Drops {
		if v != 0 {
			t.Errorf("drops[%s] = %d, want 0", reason, v)
		}
	}
	// Both FINs seen: the flow lingers, then expires.
	testenv.WaitFor(t, 10*time.Second, "flow to close and expire", func() bool {
		return r.mb.Stats().FlowsActive == 0
	})
	if s := r.mb.Stats(); s.FlowsExpired+s.FlowsReset != 1 {
		t.Errorf("flows expired %d + reset %d, want 1", s.FlowsExpired, s.FlowsReset)
	}
}

func TestPingVIPThroughStack(t *testing.T) {
	r := newRig(t, testConfig(), whoServer)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.client.Ping(ctx, testVIP); err != nil {
		t.Fatal(err)
	}
	// The reply can reach the client before the data path counts the
	// delivery (it counts after the Stack returns).
	testenv.WaitFor(t, 5*time.Second, "the ping counted as delivered to the middlebox's stack", func() bool { return r.mb.Stats().Local > 0 })
}

func TestNonServicePortGetsRST(t *testing.T) {
	r := newRig(t, testConfig(), whoServer)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.client.DialTCP(ctx, netip.AddrPortFrom(testVIP, 7777))
	if err == nil || ctx.Err() != nil {
		t.Fatalf("dial VIP:7777: err = %v, want connection refused", err)
	}
	if r.mb.Stats().FlowsCreated != 0 {
		t.Error("a flow was created for a non-service port")
	}
}

func TestLivenessSteersNewFlows(t *testing.T) {
	r := newRig(t, testConfig(), whoServer)
	syd := map[string]bool{syd1.String(): true, syd2.String(): true}
	if got := r.whoAnswers(t); !syd[got] {
		t.Fatalf("all live: served by %s, want a sydney node", got)
	}
	// One sydney node dead: the other absorbs new flows.
	r.mb.SetNodeLive(syd1, false)
	for range 4 {
		if got := r.whoAnswers(t); got != syd2.String() {
			t.Fatalf("syd1 dead: served by %s, want %s", got, syd2)
		}
	}
	// Whole sydney dead: dublin.
	r.mb.SetNodeLive(syd2, false)
	for range 3 {
		if got := r.whoAnswers(t); got != dub1.String() {
			t.Fatalf("sydney dead: served by %s, want %s", got, dub1)
		}
	}
	dcs := r.mb.DCs()
	if dcs[0].Live || !dcs[1].Live {
		t.Errorf("/dcs live = %v,%v, want false,true", dcs[0].Live, dcs[1].Live)
	}
	// Nothing live: new connections are refused with a RST.
	r.mb.SetNodeLive(dub1, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.client.DialTCP(ctx, netip.AddrPortFrom(testVIP, anyPort)); err == nil {
		t.Fatal("dial with no live node succeeded")
	}
	if d := r.mb.Drop(ReasonNoLiveNode); d != 1 {
		t.Errorf("no_live_node drops = %d, want 1", d)
	}
	// Sydney back: new flows return to it.
	r.mb.SetNodeLive(syd1, true)
	if got := r.whoAnswers(t); got != syd1.String() {
		t.Fatalf("syd1 back: served by %s, want %s", got, syd1)
	}
	if err := r.mb.SetNodeLive(netip.MustParseAddrPort("10.9.9.9:1"), true); err == nil {
		t.Error("SetNodeLive of an unknown node did not fail")
	}
}

func TestTableFullGetsRST(t *testing.T) {
	cfg := testConfig()
	cfg.MaxFlows = 1
	r := newRig(t, cfg, whoServer)
	c := r.dial(t, anyPort)
	readLine(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.client.DialTCP(ctx, netip.AddrPortFrom(testVIP, anyPort)); err == nil {
		t.Fatal("second connection succeeded with a table of 1")
	} else if ctx.Err() != nil {
		t.Fatalf("second connection timed out instead of being refused: %v", err)
	}
	if d := r.mb.Drop(ReasonTableFull); d != 1 {
		t.Errorf("table_full drops = %d, want 1", d)
	}
	if s := r.mb.Stats(); s.RSTSent != 1 || s.FlowsActive != 1 {
		t.Errorf("rst sent %d, active %d; want 1, 1", s.RSTSent, s.FlowsActive)
	}
	// The existing flow still works.
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo after table full: %q %v", b, err)
	}
}

// tracer keeps the last packets the router saw, to print when a test
// fails.
type tracer struct {
	mu   sync.Mutex
	ring [64]string
	n    int
}

func (tr *tracer) add(from string, pkt []byte) {
	ip := header.IPv4(pkt)
	if len(pkt) < 20 || ip.TransportProtocol() != header.TCPProtocolNumber || len(ip.Payload()) < 20 {
		return
	}
	tcp := header.TCP(ip.Payload())
	s := fmt.Sprintf("%s %-4s %s:%d > %s:%d %s seq=%d ack=%d win=%d len=%d", time.Now().Format("05.000"), from, ip.SourceAddress(), tcp.SourcePort(),
		ip.DestinationAddress(), tcp.DestinationPort(), tcp.Flags(), tcp.SequenceNumber(), tcp.AckNumber(), tcp.WindowSize(), len(tcp)-int(tcp.DataOffset()))
	tr.mu.Lock()
	tr.ring[tr.n%len(tr.ring)] = s
	tr.n++
	tr.mu.Unlock()
}

func (tr *tracer) dump(t *testing.T) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for i := max(0, tr.n-len(tr.ring)); i < tr.n; i++ {
		t.Log(tr.ring[i%len(tr.ring)])
	}
}

// TestForkedFlowReachesEveryDC: a connection to the multicast port is
// forked to one node in each DC; every DC receives every client byte, and
// the client gets the (identical) echo once.
func TestForkedFlowReachesEveryDC(t *testing.T) {
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	var mu sync.Mutex
	got := map[string]int{}
	r := newRig(t, cfg, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				mu.Lock()
				got[c.LocalAddr().String()] += n
				mu.Unlock()
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	c := r.dial(t, 6379)
	const size = 1 << 20
	up := make([]byte, size)
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range up {
		up[i] = byte(rng.Uint32())
	}
	go func() {
		c.Write(up)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	back, err := io.ReadAll(c)
	if err != nil {
		r.tr.dump(t)
		t.Fatalf("read after %d bytes: %v; middlebox %+v", len(back), err, r.mb.Stats())
	}
	if !bytes.Equal(back, up) {
		t.Fatalf("echo: got %d bytes, want %d identical", len(back), size)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("servers reached: %v, want one node in each of 2 DCs", got)
	}
	for node, n := range got {
		if n != size {
			t.Errorf("node %s got %d bytes, want %d", node, n, size)
		}
	}
	if fl := r.mb.Flows(0); len(fl) == 1 && (fl[0].Kind != "forked" || len(fl[0].Nodes) != 2) {
		t.Errorf("flow %+v", fl[0])
	}
}

// gwProbes dials probes through a "gw" host of a rig's network, as from
// the gateway. The rig's network is built inside newRig, so the host is
// added after (attach) and dials fail until then.
type gwProbes struct {
	h atomic.Pointer[netstacktest.NetHost]
}

func (g *gwProbes) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	h := g.h.Load()
	if h == nil {
		return nil, errors.New("no gw host yet")
	}
	return h.DialTCP(ctx, netip.MustParseAddrPort(addr))
}

// attach adds the gw host to r's network, serves ready on port 8379 of
// every DC host, and waits until the detector has RTT samples of every
// node (probes answer): a node never heard from keeps the benefit of the
// doubt for the prober's MaxTimeout.
func (g *gwProbes) attach(t *testing.T, r *rig, ready http.HandlerFunc) {
	t.Helper()
	h, err := r.net.AddHost("gw", netip.MustParseAddr("10.200.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	g.h.Store(h)
	for _, dc := range []string{"sydney", "dublin"} {
		ln, err := r.dcs[dc].ListenTCP(netip.MustParseAddrPort("0.0.0.0:8379"))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: ready}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	testenv.WaitFor(t, 5*time.Second, "probes of every node to answer", func() bool {
		for i := range r.mb.nodes {
			if st, ok := r.mb.failoverNode(i); !ok || st.LastHeard.IsZero() {
				return false
			}
		}
		return true
	})
}

// TestFailoverCutMovesAnycastClients: probes (through a memnet host, as
// from the gateway) watch every node's /ready; when sydney is cut, the
// detector declares it down, the live anycast flow to it gets a RST the
// client accepts, and the client's reconnection lands in dublin.
func TestFailoverCutMovesAnycastClients(t *testing.T) {
	var cut atomic.Bool
	sydney := map[[4]byte]bool{syd1.Addr().As4(): true, syd2.Addr().As4(): true}
	filter := func(from string, pkt []byte) bool {
		if !cut.Load() || len(pkt) < 20 {
			return true
		}
		return !sydney[[4]byte(pkt[12:16])] && !sydney[[4]byte(pkt[16:20])]
	}
	cfg := testConfig()
	var gw gwProbes
	cfg.Failover = &FailoverConfig{
		Detector: failover.Config{Mode: failover.Fast, ReadmitAfter: 300 * time.Millisecond},
		Probe:    prober.HTTP,
		Prober:   prober.Config{Interval: 50 * time.Millisecond, MinTimeout: 400 * time.Millisecond, DialContext: gw.dial},
	}
	r := newRigOpts(t, cfg, whoServer, netstacktest.NetworkOptions{Filter: filter})
	gw.attach(t, r, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ready")) })
	c := r.dial(t, anyPort)
	if got := readLine(t, c); got != syd1.String() && got != syd2.String() {
		t.Fatalf("before the cut: served by %s", got)
	}
	cut.Store(true)
	start := time.Now()
	// The client's flow is reset: a read fails (RST accepted).
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read on a flow to a cut DC succeeded")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("flow to the cut DC was not reset within 10s (middlebox %+v)", r.mb.Stats())
	}
	t.Logf("client reset %v after the cut", time.Since(start))
	if got := r.whoAnswers(t); got != dub1.String() {
		t.Fatalf("after the cut: served by %s, want %s", got, dub1)
	}
	dcs := r.mb.DCs()
	if dcs[0].Live || !dcs[1].Live {
		t.Errorf("/dcs live %v/%v, want false/true", dcs[0].Live, dcs[1].Live)
	}
	if tr := dcs[0].Transitions; len(tr) == 0 || tr[len(tr)-1].Kind != "DCDown" || dcs[0].Nodes[0].Cause == "" {
		t.Errorf("/dcs sydney transitions %+v, node %+v", tr, dcs[0].Nodes[0])
	}
	if s := r.mb.Stats(); s.RSTSent == 0 {
		t.Error("no RST counted")
	}
	// Heal: sydney is readmitted (probes ready for ReadmitAfter) for new flows.
	cut.Store(false)
	testenv.WaitFor(t, 5*time.Second, "sydney readmitted", func() bool { return r.mb.DCs()[0].Live })
	if got := r.whoAnswers(t); got != syd1.String() && got != syd2.String() {
		t.Fatalf("after heal: served by %s, want sydney", got)
	}
}
