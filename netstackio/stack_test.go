package netstackio

import (
	"bytes"
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func echoRequest(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(data))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(src.As4()),
		DstAddr:     tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(ip.Payload())
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(icmp.Payload(), data)
	icmp.SetChecksum(0)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return pkt
}

func TestStackAnswersEchoOnVIP(t *testing.T) {
	vip := netip.MustParseAddr("10.200.100.1")
	client := netip.MustParseAddr("10.1.2.3")
	st, err := NewStack(vip, 1500)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	replies := make(chan []byte, 4)
	st.SetOutput(func(buf []byte, offset int) {
		if h := virtio.At(buf, offset); !bytes.Equal(h, make([]byte, virtio.HdrLen)) {
			t.Errorf("output vnet header %x, want zeros", []byte(h))
		}
		replies <- append([]byte(nil), buf[offset:]...)
	})
	data := []byte("sdnkvs ping payload")
	if err := st.Deliver(echoRequest(client, vip, 77, 5, data)); err != nil {
		t.Fatal(err)
	}
	var rep []byte
	select {
	case rep = <-replies:
	case <-time.After(10 * time.Second):
		t.Fatal("no echo reply")
	}
	ip := header.IPv4(rep)
	if !ip.IsValid(len(rep)) || !ip.IsChecksumValid() {
		t.Fatalf("invalid IPv4 reply %x", rep)
	}
	if ip.SourceAddress() != tcpip.AddrFrom4(vip.As4()) || ip.DestinationAddress() != tcpip.AddrFrom4(client.As4()) {
		t.Fatalf("reply %v -> %v", ip.SourceAddress(), ip.DestinationAddress())
	}
	if ip.TransportProtocol() != header.ICMPv4ProtocolNumber {
		t.Fatalf("reply protocol %d", ip.TransportProtocol())
	}
	icmp := header.ICMPv4(ip.Payload())
	if icmp.Type() != header.ICMPv4EchoReply || icmp.Ident() != 77 || icmp.Sequence() != 5 {
		t.Fatalf("reply type %d ident %d seq %d", icmp.Type(), icmp.Ident(), icmp.Sequence())
	}
	if checksum.Checksum(icmp, 0) != 0xffff {
		t.Fatal("bad ICMP checksum in reply")
	}
	if !bytes.Equal(icmp.Payload(), data) {
		t.Fatalf("reply payload %q", icmp.Payload())
	}

	// A request with a bad ICMP checksum is dropped by the stack.
	bad := echoRequest(client, vip, 78, 6, data)
	bad[len(bad)-1] ^= 0xff
	st.Deliver(bad)
	// Echo to another address is not answered either (not ours).
	st.Deliver(echoRequest(client, netip.MustParseAddr("10.200.100.2"), 79, 7, data))
	// A good one after them is answered, and is the only reply.
	st.Deliver(echoRequest(client, vip, 80, 8, data))
	select {
	case rep = <-replies:
	case <-time.After(10 * time.Second):
		t.Fatal("no echo reply")
	}
	if id := header.ICMPv4(header.IPv4(rep).Payload()).Ident(); id != 80 {
		t.Fatalf("reply ident %d, want 80 (bad-checksum or foreign request answered)", id)
	}

	if err := st.Deliver([]byte{0x12, 0x34}); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("garbage Deliver: %v", err)
	}
	if s := st.Stats(); s.Invalid != 1 || s.Emitted != 2 || s.Delivered != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestStackCloseLeaksNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		st, err := NewStack(netip.MustParseAddr("10.200.100.1"), 1500)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan struct{}, 1)
		st.SetOutput(func([]byte, int) { got <- struct{}{} })
		st.Deliver(echoRequest(netip.MustParseAddr("10.0.0.9"), st.VIP(), 1, 1, nil))
		<-got
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		st.Close() // idempotent
	}
	testenv.WaitFor(t, 10*time.Second, "goroutines to exit after Close", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

func TestNewStackRejectsBadArgs(t *testing.T) {
	if _, err := NewStack(netip.Addr{}, 1500); err == nil {
		t.Error("invalid VIP accepted")
	}
	if _, err := NewStack(netip.MustParseAddr("10.0.0.1"), 100); err == nil {
		t.Error("MTU 100 accepted")
	}
}
