package netstacktest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Network is an in-memory IPv4 network of gVisor hosts for tests that
// need no root: each host is a gVisor stack on a link/channel
// endpoint, and a tiny router plays the gateway kernel of
// docs/design.md section 3.
//
//	host ──► router ─┬─ to the VIP, or from a policy (node service) port ─► middlebox Device
//	                 └─ otherwise: by destination address ─► host
//	middlebox Device ─► router ─► by destination address ─► host
//
// Hosts validate received checksums (no RX checksum offload), so a bad
// rewrite in the middlebox shows up as a stalled connection. A Network and
// its Hosts are safe for concurrent use.

// NetworkOptions configures a Network. Zero fields take defaults.
type NetworkOptions struct {
	MTU      int // link MTU of every host (default 1500)
	QueueLen int // per-host channel queue (default and minimum 1024)
	// Trace, if set, sees every packet the router handles (from is "host"
	// or "mb"); pkt is valid only during the call. Called concurrently.
	Trace func(from string, pkt []byte)
	// Filter, if set, decides for every packet the router handles whether
	// it is delivered (true) or dropped (false, counted in Filtered): a
	// way to inject loss or cut a host off. Called concurrently.
	Filter func(from string, pkt []byte) bool
}

type policyKey struct {
	addr [4]byte
	port uint16
}

// Network is the router and its hosts.
type Network struct {
	opts NetworkOptions

	mu     sync.RWMutex
	hosts  map[[4]byte]*NetHost
	all    []*NetHost
	mb     netstackio.Device
	vip    [4]byte
	policy map[policyKey]bool

	mbWriteMu sync.Mutex
	mbBuf     [1][]byte

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	routed, noRoute, toMB, fromMB, badCsum, filtered atomic.Uint64
}

// NetworkStats counts what the router did.
type NetworkStats struct {
	Routed  uint64 // packets delivered to a host
	NoRoute uint64 // packets for no known host (dropped)
	ToMB    uint64 // packets written into the middlebox Device
	FromMB  uint64 // packets read from the middlebox Device
	// BadChecksum counts packets from the middlebox whose IPv4 or TCP
	// checksum is wrong (still delivered: the receiving host drops them).
	BadChecksum uint64
	Filtered    uint64 // packets NetworkOptions.Filter dropped
}

// NewNetwork returns an empty Network. Close releases it.
func NewNetwork(opts NetworkOptions) *Network {
	if opts.MTU <= 0 {
		opts.MTU = 1500
	}
	if opts.QueueLen < 1024 {
		opts.QueueLen = 1024
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Network{
		opts:   opts,
		hosts:  map[[4]byte]*NetHost{},
		policy: map[policyKey]bool{},
		ctx:    ctx,
		cancel: cancel,
		mbBuf:  [1][]byte{make([]byte, virtio.HdrLen+netstackio.MaxPacket)},
	}
}

// NetHost is one gVisor stack attached to the Network.
type NetHost struct {
	Name  string
	Addrs []netip.Addr
	Stack *stack.Stack
	net   *Network
	ep    *channel.Endpoint
}

// AddHost creates a host owning addrs (IPv4) with a default route to the
// router.
func (n *Network) AddHost(name string, addrs ...netip.Addr) (*NetHost, error) {
	if len(addrs) == 0 {
		return nil, errors.New("netstacktest: host needs an address")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			return nil, fmt.Errorf("netstacktest: %s is not IPv4", a)
		}
		if _, dup := n.hosts[a.As4()]; dup {
			return nil, fmt.Errorf("netstacktest: address %s already taken", a)
		}
	}
	s, ep, err := netstackio.NewGVisor(netstackio.GVisorConfig{Addrs: addrs, MTU: n.opts.MTU, QueueLen: n.opts.QueueLen})
	if err != nil {
		return nil, err
	}
	// RACK loss detection stalls gVisor TCP after a loss when the RTT is
	// almost zero (google/gvisor#6113: the sender then only moves on its
	// retransmission timer); in-memory links have such RTTs, so hosts use
	// classic recovery (SACK stays on).
	rec := tcpip.TCPRecovery(0)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &rec); err != nil {
		s.Close()
		s.Wait()
		ep.Close()
		return nil, fmt.Errorf("netstacktest: TCP recovery option: %s", err)
	}
	h := &NetHost{Name: name, Stack: s, net: n, ep: ep}
	for _, a := range addrs {
		h.Addrs = append(h.Addrs, a.Unmap())
	}
	for _, a := range h.Addrs {
		n.hosts[a.As4()] = h
	}
	n.all = append(n.all, h)
	n.wg.Add(1)
	go n.hostLoop(h)
	return h, nil
}

// AttachMiddlebox makes the router send packets to vip, and TCP packets
// from each policy address:port (the nodes' service ports), into dev (the
// router's end of a MemPipe whose other end the middlebox runs on), and
// route what the middlebox writes by destination. The Network owns dev and
// closes it on Close.
func (n *Network) AttachMiddlebox(dev netstackio.Device, vip netip.Addr, policy ...netip.AddrPort) {
	n.mu.Lock()
	n.mb = dev
	n.vip = vip.Unmap().As4()
	for _, p := range policy {
		n.policy[policyKey{p.Addr().Unmap().As4(), p.Port()}] = true
	}
	n.mu.Unlock()
	n.wg.Add(1)
	go n.mbLoop(dev)
}

// Stats returns the router's counters.
func (n *Network) Stats() NetworkStats {
	return NetworkStats{Routed: n.routed.Load(), NoRoute: n.noRoute.Load(), ToMB: n.toMB.Load(), FromMB: n.fromMB.Load(), BadChecksum: n.badCsum.Load(), Filtered: n.filtered.Load()}
}

// Close stops the router and every host and waits for them. Idempotent.
func (n *Network) Close() {
	n.once.Do(func() {
		n.cancel()
		n.mu.RLock()
		mb := n.mb
		hosts := append([]*NetHost(nil), n.all...)
		n.mu.RUnlock()
		if mb != nil {
			mb.Close()
		}
		n.wg.Wait()
		for _, h := range hosts {
			h.Stack.Close()
			h.Stack.Wait()
			h.ep.Close()
		}
	})
}

// hostLoop routes what host h sends.
func (n *Network) hostLoop(h *NetHost) {
	defer n.wg.Done()
	buf := make([]byte, netstackio.MaxPacket)
	for {
		pb := h.ep.ReadContext(n.ctx)
		if pb == nil {
			return
		}
		sz := 0
		for _, s := range pb.AsSlices() {
			sz += copy(buf[sz:], s)
		}
		pb.DecRef()
		n.route(buf[:sz], true)
	}
}

// mbLoop routes what the middlebox writes.
func (n *Network) mbLoop(dev netstackio.Device) {
	defer n.wg.Done()
	bs := dev.BatchSize()
	bufs := make([][]byte, bs)
	for i := range bufs {
		bufs[i] = make([]byte, virtio.HdrLen+netstackio.MaxPacket)
	}
	sizes := make([]int, bs)
	for {
		k, err := dev.Read(bufs, sizes, virtio.HdrLen)
		if err != nil {
			return
		}
		for i := range k {
			n.fromMB.Add(1)
			pkt := bufs[i][virtio.HdrLen : virtio.HdrLen+sizes[i]]
			if !checksumsOK(pkt) {
				n.badCsum.Add(1)
			}
			n.route(pkt, false)
		}
	}
}

// route sends one IPv4 packet on. Packets from hosts may be diverted to
// the middlebox; packets from the middlebox never are.
func (n *Network) route(pkt []byte, fromHost bool) {
	if n.opts.Trace != nil {
		from := "mb"
		if fromHost {
			from = "host"
		}
		n.opts.Trace(from, pkt)
	}
	if n.opts.Filter != nil {
		from := "mb"
		if fromHost {
			from = "host"
		}
		if !n.opts.Filter(from, pkt) {
			n.filtered.Add(1)
			return
		}
	}
	if len(pkt) < header.IPv4MinimumSize || pkt[0]>>4 != 4 {
		n.noRoute.Add(1)
		return
	}
	var src, dst [4]byte
	copy(src[:], pkt[12:16])
	copy(dst[:], pkt[16:20])
	n.mu.RLock()
	mb := n.mb
	divert := false
	if fromHost && mb != nil {
		if dst == n.vip {
			divert = true
		} else if ihl := int(pkt[0]&0xf) * 4; pkt[9] == uint8(header.TCPProtocolNumber) && len(pkt) >= ihl+4 {
			sport := uint16(pkt[ihl])<<8 | uint16(pkt[ihl+1])
			divert = n.policy[policyKey{src, sport}]
		}
	}
	h := n.hosts[dst]
	n.mu.RUnlock()
	if divert {
		n.mbWriteMu.Lock()
		b := n.mbBuf[0]
		clear(b[:virtio.HdrLen])
		c := copy(b[virtio.HdrLen:], pkt)
		n.mbBuf[0] = b[:virtio.HdrLen+c]
		mb.Write(n.mbBuf[:], virtio.HdrLen)
		n.mbBuf[0] = b[:cap(b)]
		n.mbWriteMu.Unlock()
		n.toMB.Add(1)
		return
	}
	if h == nil {
		n.noRoute.Add(1)
		return
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	h.ep.InjectInbound(ipv4.ProtocolNumber, pb)
	pb.DecRef()
	n.routed.Add(1)
}

// DialTCP connects from h to dst.
func (h *NetHost) DialTCP(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, h.Stack, fullAddr(dst), ipv4.ProtocolNumber)
}

// ListenTCP listens on addr (an address of h, or unspecified) and port.
func (h *NetHost) ListenTCP(addr netip.AddrPort) (*gonet.TCPListener, error) {
	fa := tcpip.FullAddress{Port: addr.Port()}
	if addr.Addr().IsValid() && !addr.Addr().IsUnspecified() {
		fa = fullAddr(addr)
	}
	return gonet.ListenTCP(h.Stack, fa, ipv4.ProtocolNumber)
}

// Ping sends one ICMP echo request from h to dst and waits for the reply
// until ctx ends. It returns the round-trip time.
func (h *NetHost) Ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	var wq waiter.Queue
	ep, terr := h.Stack.NewEndpoint(icmp.ProtocolNumber4, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return 0, fmt.Errorf("netstacktest: ping endpoint: %s", terr)
	}
	defer ep.Close()
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)

	req := make([]byte, header.ICMPv4MinimumSize+8)
	icmpHdr := header.ICMPv4(req)
	icmpHdr.SetType(header.ICMPv4Echo)
	copy(req[header.ICMPv4MinimumSize:], "memnet!!")
	start := time.Now()
	to := tcpip.FullAddress{Addr: tcpip.AddrFrom4(dst.Unmap().As4())}
	var r bytesReader
	r.b = req
	if _, terr := ep.Write(&r, tcpip.WriteOptions{To: &to}); terr != nil {
		return 0, fmt.Errorf("netstacktest: ping write: %s", terr)
	}
	for {
		var w sinkWriter
		_, terr := ep.Read(&w, tcpip.ReadOptions{})
		if terr == nil {
			if len(w.b) >= header.ICMPv4MinimumSize && header.ICMPv4(w.b).Type() == header.ICMPv4EchoReply {
				return time.Since(start), nil
			}
			continue
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return 0, fmt.Errorf("netstacktest: ping read: %s", terr)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("netstacktest: ping %s: %w", dst, ctx.Err())
		}
	}
}

type bytesReader struct{ b []byte }

func (r *bytesReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, errors.New("EOF")
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func (r *bytesReader) Len() int { return len(r.b) }

type sinkWriter struct{ b []byte }

func (w *sinkWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// SendToMiddlebox writes one raw IP packet (no virtio-net header) into the
// middlebox Device as if the gateway had routed it there, for tests of bad
// input. It reports false when no middlebox is attached.
func (n *Network) SendToMiddlebox(pkt []byte) bool {
	n.mu.RLock()
	mb := n.mb
	n.mu.RUnlock()
	if mb == nil {
		return false
	}
	n.mbWriteMu.Lock()
	defer n.mbWriteMu.Unlock()
	b := n.mbBuf[0]
	clear(b[:virtio.HdrLen])
	c := copy(b[virtio.HdrLen:], pkt)
	n.mbBuf[0] = b[:virtio.HdrLen+c]
	w, _ := mb.Write(n.mbBuf[:], virtio.HdrLen)
	n.mbBuf[0] = b[:cap(b)]
	n.toMB.Add(1)
	return w == 1
}

// checksumsOK verifies an IPv4 packet's header checksum and, for TCP, its
// TCP checksum, with gVisor's header package.
func checksumsOK(pkt []byte) bool {
	ip := header.IPv4(pkt)
	if !ip.IsValid(len(pkt)) || !ip.IsChecksumValid() {
		return false
	}
	if ip.TransportProtocol() != header.TCPProtocolNumber || ip.FragmentOffset() != 0 || ip.More() {
		return true
	}
	tcp := header.TCP(ip.Payload())
	if len(tcp) < header.TCPMinimumSize {
		return false
	}
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	return checksum.Checksum(tcp, sum) == 0xffff
}
