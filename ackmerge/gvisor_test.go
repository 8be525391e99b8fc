package ackmerge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio"
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// gHost is one gVisor TCP/IP stack on a channel endpoint (checksums are
// validated on receive: no RX checksum offload).
type gHost struct {
	s  *stack.Stack
	ep *channel.Endpoint
}

func newGHost(t *testing.T, addr netip.Addr) *gHost { return newGHostOpts(t, addr, 1500, 0) }

// newGHostOpts makes a host with the given link MTU (hence MSS) and, if
// rcvBuf > 0, that receive buffer (hence window scale).
func newGHostOpts(t *testing.T, addr netip.Addr, mtu, rcvBuf int) *gHost {
	s, ep, err := netstackio.NewGVisor(netstackio.GVisorConfig{Addrs: []netip.Addr{addr}, MTU: mtu, QueueLen: 4096})
	if err != nil {
		t.Fatal(err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		t.Fatal(err)
	}
	if rcvBuf > 0 {
		opt := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: rcvBuf, Max: rcvBuf}
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &opt); err != nil {
			t.Fatal(err)
		}
		mod := tcpip.TCPModerateReceiveBufferOption(false)
		s.SetTransportProtocolOption(tcp.ProtocolNumber, &mod)
	}
	h := &gHost{s: s, ep: ep}
	t.Cleanup(func() {
		s.Close()
		s.Wait()
		ep.Close()
	})
	return h
}

func (h *gHost) inject(pkt []byte) {
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	h.ep.InjectInbound(ipv4.ProtocolNumber, pb)
	pb.DecRef()
}

type gPkt struct {
	from int
	buf  []byte // packet at testOff
}

// forkDriver is the test's middlebox: it moves packets between the client
// and server endpoints through one Flow, from one goroutine.
type forkDriver struct {
	t       *testing.T
	cli     *gHost
	srv     []*gHost
	in      chan gPkt
	f       *Flow
	out     Out
	emitted int
	mu      sync.Mutex
	stats   Stats
	events  []Event
	synSACK bool // the client's SYN offered SACK (so stripping is exercised)
	loss    float64
	r       *rand.Rand
	cfg     Config
}

func (d *forkDriver) reader(ctx context.Context, h *gHost, from int) {
	for {
		pb := h.ep.ReadContext(ctx)
		if pb == nil {
			return
		}
		buf := make([]byte, testOff, testOff+pb.Size())
		for _, s := range pb.AsSlices() {
			buf = append(buf, s...)
		}
		pb.DecRef()
		select {
		case d.in <- gPkt{from: from, buf: buf}:
		case <-ctx.Done():
			return
		}
	}
}

func (d *forkDriver) run(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		d.mu.Lock()
		d.out.Reset()
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if d.f != nil {
				d.mu.Lock()
				d.f.Tick(time.Now(), &d.out)
				d.mu.Unlock()
			}
		case m := <-d.in:
			var p packet.TCP
			if p.Parse(m.buf[testOff:], virtio.Hdr(m.buf[testOff-virtio.HdrLen:testOff])) != nil {
				continue // not TCP: ignore
			}
			if d.f == nil {
				if m.from != ToClient || p.Flags()&packet.FlagSYN == 0 {
					continue
				}
				ts := make([]Target, len(d.srv))
				for k := range ts {
					ts[k] = Target{Addr: nodeAddr(k), DC: k}
				}
				f, err := NewFlow(d.cfg, netip.AddrPortFrom(p.SrcAddr(), p.SrcPort()), vipAddr, ts)
				if err != nil {
					panic(err)
				}
				o, _ := p.SynOptions()
				d.mu.Lock()
				d.f = f
				d.synSACK = o.SACKOK
				d.mu.Unlock()
			}
			d.mu.Lock()
			d.f.Step(m.buf, &p, m.from, time.Now(), &d.out)
			d.mu.Unlock()
		}
		for _, e := range d.out.Pkts {
			if d.loss > 0 && d.r.Float64() < d.loss {
				continue
			}
			pkt := e.Buf[d.out.Offset:]
			if e.To == ToClient {
				d.cli.inject(pkt)
			} else {
				d.srv[e.To].inject(pkt)
			}
			d.emitted++
		}
		if d.f != nil {
			d.mu.Lock()
			d.stats = d.f.Stats()
			d.events = append(d.events, d.out.Events...)
			d.mu.Unlock()
		}
	}
}

// In-process end to end: one gVisor client forked to three gVisor servers,
// 8 MiB each way; every server receives the client's bytes exactly, the
// client receives the (identical) reply stream exactly, and nothing is
// reset.
func TestGVisorClientForkedToThreeServers(t *testing.T) {
	t.Run("clean", func(t *testing.T) { testGVisorFork(t, 0, nil, Config{}) })
	// 1% of the packets the middlebox emits are lost: gVisor recovers with
	// cumulative ACKs only (SACK was stripped) through merged dup ACKs.
	t.Run("loss=1%", func(t *testing.T) { testGVisorFork(t, 0.01, nil, Config{}) })
	// The same with SACK kept (Config.SACK, experimental): the slowest
	// branch's blocks, cut to what every branch holds, reach the client.
	// (1 MiB: gVisor's RACK loss detection recovers slowly here when the
	// merged blocks are empty.)
	t.Run("loss=1%/sack", func(t *testing.T) { testGVisorFork(t, 0.01, nil, Config{SACK: true}) })
	// Servers behind links of different MTUs (so different MSS and reply
	// segmentation) and with different receive buffers (so different
	// window scales).
	t.Run("mixed-mtu-and-window-scale", func(t *testing.T) {
		testGVisorFork(t, 0, []hostOpts{{1280, 64 << 10}, {9000, 4 << 20}, {1500, 256 << 10}}, Config{})
	})
}

type hostOpts struct{ mtu, rcvBuf int }

func testGVisorFork(t *testing.T, loss float64, opts []hostOpts, cfg Config) {
	const n = 3
	size := 8 << 20
	if testing.Short() || raceEnabled || cfg.SACK {
		size = 1 << 20
	}
	up := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(up)
	down := make([]byte, size)
	rand.New(rand.NewSource(2)).Read(down)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	d := &forkDriver{t: t, cli: newGHost(t, cliAddr.Addr()), in: make(chan gPkt, 8192), loss: loss, r: rand.New(rand.NewSource(3)), cfg: cfg}
	d.out.Offset = testOff
	d.out.Alloc = func(n int) []byte { return make([]byte, n) }
	for k := 0; k < n; k++ {
		o := hostOpts{1500, 0}
		if opts != nil {
			o = opts[k]
		}
		d.srv = append(d.srv, newGHostOpts(t, nodeAddr(k).Addr(), o.mtu, o.rcvBuf))
	}
	wg.Add(2 + n)
	go func() { defer wg.Done(); d.run(ctx) }()
	go func() { defer wg.Done(); d.reader(ctx, d.cli, ToClient) }()
	for k := range d.srv {
		go func() { defer wg.Done(); d.reader(ctx, d.srv[k], k) }()
	}

	// Servers: read everything, hash it, answer with the same reply.
	type result struct {
		k   int
		sum [32]byte
		n   int
		err error
	}
	results := make(chan result, n)
	for k, h := range d.srv {
		l, err := gonet.ListenTCP(h.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(nodeAddr(k).Addr().As4()), Port: 6379}, ipv4.ProtocolNumber)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			c, err := l.Accept()
			if err != nil {
				results <- result{k: k, err: err}
				return
			}
			defer c.Close()
			werr := make(chan error, 1)
			go func() { _, err := c.Write(down); werr <- err }()
			hs := sha256.New()
			m, err := io.Copy(hs, io.LimitReader(c, int64(size)))
			if err == nil {
				err = <-werr
			}
			var sum [32]byte
			copy(sum[:], hs.Sum(nil))
			results <- result{k: k, sum: sum, n: int(m), err: err}
		}()
	}

	dctx, dcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer dcancel()
	c, err := gonet.DialContextTCP(dctx, d.cli.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(vipAddr.Addr().As4()), Port: vipAddr.Port()}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("dial VIP: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	werr := make(chan error, 1)
	go func() { _, err := c.Write(up); werr <- err }()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		d.mu.Lock()
		t.Fatalf("client read: %v (stats %+v events %v)", err, d.stats, d.events)
	}
	if err := <-werr; err != nil {
		t.Fatalf("client write: %v", err)
	}
	if !bytes.Equal(got, down) {
		t.Fatal("client received a different reply stream")
	}
	want := sha256.Sum256(up)
	for i := 0; i < n; i++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("server %d: %v", r.k, r.err)
		}
		if r.n != size || r.sum != want {
			t.Fatalf("server %d received %d bytes, hash match %v", r.k, r.n, r.sum == want)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.events {
		if e.Kind == EvBranchRemoved || e.Kind == EvClientReset {
			t.Fatalf("unexpected event %v", e)
		}
	}
	t.Logf("flow stats: %+v", d.stats)
	if opts != nil {
		var ws []uint8
		for k := range d.srv {
			ws = append(ws, d.f.br[k].ws)
		}
		t.Logf("branch window scales %v, MSS %d/%d/%d", ws, d.f.br[0].mss, d.f.br[1].mss, d.f.br[2].mss)
		if ws[0] == ws[1] || d.f.br[0].mss == d.f.br[1].mss {
			t.Fatalf("servers did not differ: ws %v", ws)
		}
	}
	if !d.synSACK {
		t.Fatal("the client's SYN did not offer SACK: stripping not exercised")
	}
	if cfg.SACK != d.f.sackOK {
		t.Fatalf("SACK in effect %v, want %v", d.f.sackOK, cfg.SACK)
	}
	if loss > 0 && d.stats.DupAcks == 0 {
		t.Fatalf("no duplicate ACK passed on under loss: %+v", d.stats)
	}
	if d.stats.DupAcks+d.stats.Merged == 0 || d.stats.ToBranches < uint64(n*size/1500) {
		t.Fatalf("implausible stats %+v", d.stats)
	}
}
