package netstackio

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// OutputFunc receives each packet the Stack emits. The packet is
// buf[offset:], preceded by a zeroed virtio-net header at
// buf[offset-virtio.HdrLen:offset], so buf can be handed to Device.Write with
// the same offset without a copy. Checksums are complete. buf belongs to
// the Stack and is valid only during the call: copy what you keep. It is
// called from the Stack's single output goroutine, one packet at a time.
type OutputFunc func(buf []byte, offset int)

// Stack is the middlebox's own gVisor network stack for traffic addressed
// to the VIP itself (ICMP echo today; probes and local services later). The
// middlebox decides what is local and Delivers only those packets: transit
// traffic never reaches the Stack.
//
//	middlebox ──Deliver──► channel endpoint ──► gVisor (IPv4/IPv6, ICMP, TCP)
//	gVisor ──► channel endpoint ──► output goroutine ──► OutputFunc
//
// Stack is safe for concurrent use.
type Stack struct {
	vip netip.Addr
	mtu int
	s   *stack.Stack
	ep  *channel.Endpoint

	out    atomic.Pointer[OutputFunc]
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	delivered, invalid, emitted, unsent atomic.Uint64
}

// StackStats counts the Stack's traffic.
type StackStats struct {
	Delivered uint64 // packets injected by Deliver
	Invalid   uint64 // packets Deliver refused (not IP, wrong version, too short)
	Emitted   uint64 // packets passed to the OutputFunc
	Unsent    uint64 // packets emitted while no OutputFunc was set (dropped)
}

// NewStack creates a gVisor stack that owns vip (IPv4 or IPv6) on a
// channel endpoint of the given MTU, with a default route through it. The
// endpoint validates received checksums (no RX checksum offload) and
// computes transmitted ones. Close releases it.
func NewStack(vip netip.Addr, mtu int) (*Stack, error) {
	if !vip.IsValid() {
		return nil, fmt.Errorf("netstackio: invalid VIP")
	}
	if mtu < 576 || mtu > MaxPacket {
		return nil, fmt.Errorf("netstackio: stack MTU %d out of range [576, %d]", mtu, MaxPacket)
	}
	vip = vip.Unmap()
	s, ep, err := NewGVisor(GVisorConfig{Addrs: []netip.Addr{vip}, MTU: mtu})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &Stack{vip: vip, mtu: mtu, s: s, ep: ep, cancel: cancel, done: make(chan struct{})}
	go st.outputLoop(ctx)
	return st, nil
}

// VIP returns the address the Stack owns.
func (st *Stack) VIP() netip.Addr { return st.vip }

// NetStack exposes the underlying gVisor stack, for local services and
// probes (gonet dialers and listeners bound to the VIP).
func (st *Stack) NetStack() *stack.Stack { return st.s }

// SetOutput sets the function that receives emitted packets (nil drops
// them, counted in Unsent). It may be called at any time.
func (st *Stack) SetOutput(fn OutputFunc) {
	if fn == nil {
		st.out.Store(nil)
		return
	}
	st.out.Store(&fn)
}

// Deliver injects one IP packet (no virtio-net header, complete checksums)
// into the Stack. The packet is copied; the caller keeps pkt. Packets
// that are not IPv4/IPv6 are refused with an error and counted.
func (st *Stack) Deliver(pkt []byte) error {
	return st.deliver(pkt, false)
}

// DeliverVnet is Deliver for a packet read from an offload device: if h
// says the checksum is partial (NeedsCsum) or already validated, the Stack
// skips checksum validation instead of rejecting the packet.
func (st *Stack) DeliverVnet(h virtio.Hdr, pkt []byte) error {
	return st.deliver(pkt, h.Flags()&(virtio.FlagNeedsCsum|virtio.FlagDataValid) != 0)
}

func (st *Stack) deliver(pkt []byte, csumValid bool) error {
	var proto tcpip.NetworkProtocolNumber
	switch {
	case len(pkt) >= header.IPv4MinimumSize && pkt[0]>>4 == 4:
		proto = ipv4.ProtocolNumber
	case len(pkt) >= header.IPv6MinimumSize && pkt[0]>>4 == 6:
		proto = ipv6.ProtocolNumber
	default:
		st.invalid.Add(1)
		return fmt.Errorf("%w: not an IPv4/IPv6 packet (%d bytes)", ErrBadPacket, len(pkt))
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	pb.RXChecksumValidated = csumValid
	st.ep.InjectInbound(proto, pb)
	pb.DecRef()
	st.delivered.Add(1)
	return nil
}

// outputLoop hands every packet the stack sends to the OutputFunc.
func (st *Stack) outputLoop(ctx context.Context) {
	defer close(st.done)
	buf := make([]byte, virtio.HdrLen+MaxPacket)
	for {
		pb := st.ep.ReadContext(ctx)
		if pb == nil {
			return
		}
		n := virtio.HdrLen
		for _, s := range pb.AsSlices() {
			n += copy(buf[n:], s)
		}
		pb.DecRef()
		fn := st.out.Load()
		if fn == nil {
			st.unsent.Add(1)
			continue
		}
		clear(buf[:virtio.HdrLen])
		(*fn)(buf[:n], virtio.HdrLen)
		st.emitted.Add(1)
	}
}

// Stats returns the Stack's counters.
func (st *Stack) Stats() StackStats {
	return StackStats{
		Delivered: st.delivered.Load(),
		Invalid:   st.invalid.Load(),
		Emitted:   st.emitted.Load(),
		Unsent:    st.unsent.Load(),
	}
}

// Close stops the output goroutine and the gVisor stack and waits for
// them. It is idempotent.
func (st *Stack) Close() error {
	st.once.Do(func() {
		st.cancel()
		<-st.done
		st.s.Close()
		st.s.Wait()
		st.ep.Close()
	})
	return nil
}
