package packet

import (
	"math/rand"
	"net/netip"
	"testing"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestBuildMatchesGVisor builds random packets in both IP versions and
// reads them back with gVisor's header package: every field as asked,
// complete checksums, the virtio-net header cleared.
func TestBuildMatchesGVisor(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 2000; i++ {
		v6 := r.Intn(2) == 0
		f := Fields{
			Src:    netip.AddrPortFrom(randAddr(r, v6), uint16(r.Uint32())),
			Dst:    netip.AddrPortFrom(randAddr(r, v6), uint16(r.Uint32())),
			Seq:    r.Uint32(),
			Ack:    r.Uint32(),
			Flags:  uint8(r.Uint32()),
			Window: uint16(r.Uint32()),
		}
		if r.Intn(2) == 0 {
			f.Options = []byte{OptMSS, 4, byte(r.Uint32()), byte(r.Uint32()), OptNOP, OptWindowScale, 3, 7}
		}
		if r.Intn(2) == 0 {
			f.Payload = make([]byte, r.Intn(1500))
			r.Read(f.Payload)
		}
		buf := make([]byte, 16+f.Len()+8)
		for j := range buf {
			buf[j] = 0xa5 // dirty: Build must not rely on zeroes
		}
		var p TCP
		if err := p.Build(buf[16:], virtio.At(buf, 16), &f); err != nil {
			t.Fatalf("Build(%+v): %v", f, err)
		}
		if len(p.Buf) != f.Len() || &p.Buf[0] != &buf[16] {
			t.Fatalf("view is %d bytes at the wrong place, want %d", len(p.Buf), f.Len())
		}
		if h := virtio.At(buf, 16); h.Flags() != 0 || h.GSOType() != 0 {
			t.Fatalf("virtio-net header not cleared: % x", h)
		}
		pkt := p.Buf
		refValid(t, pkt, false)
		ipl := IPv4MinLen
		if v6 {
			ipl = IPv6Len
			if ip := header.IPv6(pkt); ip.HopLimit() != 64 || ip.NextHeader() != uint8(header.TCPProtocolNumber) {
				t.Fatalf("IPv6 header: hop limit %d, protocol %d", ip.HopLimit(), ip.NextHeader())
			}
		} else if ip := header.IPv4(pkt); ip.TTL() != 64 || ip.Flags() != header.IPv4FlagDontFragment || ip.HeaderLength() != 20 {
			t.Fatalf("IPv4 header: ttl %d, flags %d, length %d", ip.TTL(), ip.Flags(), ip.HeaderLength())
		}
		tcp := header.TCP(pkt[ipl:])
		if tcp.SourcePort() != f.Src.Port() || tcp.DestinationPort() != f.Dst.Port() || tcp.SequenceNumber() != f.Seq ||
			tcp.AckNumber() != f.Ack || uint8(tcp.Flags()) != f.Flags || tcp.WindowSize() != f.Window ||
			int(tcp.DataOffset()) != TCPMinLen+len(f.Options) || string(tcp.Options()) != string(f.Options) ||
			string(tcp.Payload()) != string(f.Payload) {
			t.Fatalf("TCP header %+v does not match %+v", tcp, f)
		}
		if p.SrcAddr() != f.Src.Addr() || p.DstAddr() != f.Dst.Addr() {
			t.Fatalf("addresses %v -> %v, want %v -> %v", p.SrcAddr(), p.DstAddr(), f.Src, f.Dst)
		}
	}
}

func TestBuildRejects(t *testing.T) {
	v4 := netip.MustParseAddrPort("10.0.0.1:1")
	v6 := netip.MustParseAddrPort("[fd00::1]:1")
	for _, tc := range []struct {
		name string
		f    Fields
		n    int
		want error
	}{
		{"two families", Fields{Src: v4, Dst: v6}, 60, ErrVersion},
		{"no address", Fields{Dst: v4}, 60, ErrVersion},
		{"options not a multiple of 4", Fields{Src: v4, Dst: v4, Options: []byte{OptNOP}}, 60, ErrBadHeader},
		{"buffer too short", Fields{Src: v4, Dst: v4}, 39, ErrBadHeader},
	} {
		var p TCP
		if err := p.Build(make([]byte, tc.n), nil, &tc.f); err != tc.want {
			t.Errorf("%s: Build = %v, want %v", tc.name, err, tc.want)
		}
	}
}
