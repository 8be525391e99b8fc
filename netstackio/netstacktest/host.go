package netstacktest

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"github.com/sdnkvs/sdnkvs/netstackio"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Host is a test double: a whole gVisor TCP/IP host whose only
// network interface is a netstackio.Device (usually one end of a
// MemPipe), so clients and servers can talk to the middlebox
// in-process, without root.
//
//	gVisor stack ──► channel endpoint ──► tx goroutine ──► Device.Write
//	Device.Read ──► rx goroutine ──► channel endpoint ──► gVisor stack
//
// gVisor validates received checksums, so a host is also a rewrite-bug
// detector.

// HostOptions configures a Host.
type HostOptions struct {
	// Addrs are the addresses the host owns (at least one).
	Addrs []netip.Addr
	// Promiscuous accepts packets for any destination address and lets the
	// host send from any source (gVisor promiscuous + spoofing modes), for
	// a host that stands in for several machines.
	Promiscuous bool
	// QueueLen is the outbound queue length in packets (default 1024).
	QueueLen int
}

// Host is a gVisor stack attached to a Device. It owns the Device: Close
// closes it. Safe for concurrent use.
type Host struct {
	s      *stack.Stack
	ep     *channel.Endpoint
	dev    netstackio.Device
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	// Err holds the first I/O error that stopped a pump (nil on Close).
	mu  sync.Mutex
	err error
}

// NewHost creates a Host on dev and starts its two pump goroutines.
func NewHost(dev netstackio.Device, opts HostOptions) (*Host, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("netstacktest: no address")
	}
	s, ep, err := netstackio.NewGVisor(netstackio.GVisorConfig{Addrs: opts.Addrs, MTU: dev.MTU(), QueueLen: opts.QueueLen, UDP: true})
	if err != nil {
		return nil, err
	}
	if opts.Promiscuous {
		s.SetPromiscuousMode(netstackio.GVisorNIC, true)
		s.SetSpoofing(netstackio.GVisorNIC, true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Host{s: s, ep: ep, dev: dev, cancel: cancel}
	h.wg.Add(2)
	go h.rx()
	go h.tx(ctx)
	return h, nil
}

// Stack returns the gVisor stack.
func (h *Host) Stack() *stack.Stack { return h.s }

// Dial opens a TCP connection to dst.
func (h *Host) Dial(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, h.s, fullAddr(dst), proto(dst.Addr()))
}

// DialFrom opens a TCP connection to dst from src (src must be owned, or
// the host promiscuous).
func (h *Host) DialFrom(ctx context.Context, src, dst netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialTCPWithBind(ctx, h.s, fullAddr(src), fullAddr(dst), proto(dst.Addr()))
}

// Listen listens for TCP on addr (an owned address, or any address of a
// promiscuous host).
func (h *Host) Listen(addr netip.AddrPort) (*gonet.TCPListener, error) {
	return gonet.ListenTCP(h.s, fullAddr(addr), proto(addr.Addr()))
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: netstackio.GVisorNIC, Addr: tcpip.AddrFromSlice(ap.Addr().Unmap().AsSlice()), Port: ap.Port()}
}

func proto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Unmap().Is6() {
		return ipv6.ProtocolNumber
	}
	return ipv4.ProtocolNumber
}

// Err returns the I/O error that stopped a pump, if any.
func (h *Host) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

func (h *Host) fail(err error) {
	if errors.Is(err, netstackio.ErrClosed) {
		return
	}
	h.mu.Lock()
	if h.err == nil {
		h.err = err
	}
	h.mu.Unlock()
}

// rx moves packets from the Device into the stack.
func (h *Host) rx() {
	defer h.wg.Done()
	const off = virtio.HdrLen
	n := h.dev.BatchSize()
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, off+netstackio.MaxPacket)
	}
	sizes := make([]int, n)
	for {
		k, err := h.dev.Read(bufs, sizes, off)
		if err != nil {
			h.fail(err)
			return
		}
		for i := 0; i < k; i++ {
			pkt := bufs[i][off : off+sizes[i]]
			var p tcpip.NetworkProtocolNumber
			switch pkt[0] >> 4 {
			case 4:
				p = ipv4.ProtocolNumber
			case 6:
				p = ipv6.ProtocolNumber
			default:
				continue
			}
			pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
			pb.RXChecksumValidated = virtio.At(bufs[i], off).Flags()&(virtio.FlagNeedsCsum|virtio.FlagDataValid) != 0
			h.ep.InjectInbound(p, pb)
			pb.DecRef()
		}
	}
}

// tx moves packets the stack sends to the Device, in batches.
func (h *Host) tx(ctx context.Context) {
	defer h.wg.Done()
	const off = virtio.HdrLen
	n := h.dev.BatchSize()
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, off+netstackio.MaxPacket)
	}
	out := make([][]byte, 0, n)
	for {
		pb := h.ep.ReadContext(ctx)
		if pb == nil {
			return
		}
		out = out[:0]
		for pb != nil {
			b := bufs[len(out)]
			clear(b[:off])
			l := off
			for _, s := range pb.AsSlices() {
				l += copy(b[l:], s)
			}
			pb.DecRef()
			out = append(out, b[:l])
			if len(out) == n {
				break
			}
			pb = h.ep.Read()
		}
		if _, err := h.dev.Write(out, off); err != nil {
			h.fail(err)
			return
		}
	}
}

// Close stops the stack and the pumps, closes the Device and waits for the
// goroutines to exit. Idempotent.
func (h *Host) Close() error {
	h.once.Do(func() {
		h.s.Close()
		h.s.Wait()
		h.cancel()
		h.dev.Close()
		h.wg.Wait()
		h.ep.Close()
	})
	return nil
}
