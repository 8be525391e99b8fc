package packet

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"net/netip"
	"testing"

	"github.com/sdnkvs/sdnkvs/netstackio/packet/packettest"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// build makes a random valid TCP packet (IPv4 or IPv6) with random options
// and payload, checksummed by gVisor's header package (the slow reference),
// laid out after a virtio-net header in one buffer. If partial, the TCP
// checksum field holds the pseudo-header sum and NEEDS_CSUM is set.
func build(r *rand.Rand, v6, partial bool) (buf []byte, vnet virtio.Hdr, pkt []byte) {
	var opts []byte
	for i := r.Intn(5); i > 0; i-- {
		switch r.Intn(6) {
		case 0:
			opts = append(opts, OptMSS, 4, byte(r.Intn(256)), byte(r.Intn(256)))
		case 1:
			opts = append(opts, OptWindowScale, 3, byte(r.Intn(15)))
		case 2:
			opts = append(opts, OptSACKPermitted, 2)
		case 3:
			opts = append(opts, OptTimestamps, 10)
			for j := 0; j < 8; j++ {
				opts = append(opts, byte(r.Intn(256)))
			}
		case 4:
			opts = append(opts, OptNOP)
		case 5:
			opts = append(opts, OptSACK, 10)
			for j := 0; j < 8; j++ {
				opts = append(opts, byte(r.Intn(256)))
			}
		}
	}
	for len(opts)%4 != 0 {
		opts = append(opts, OptEnd)
	}
	if len(opts) > 40 {
		opts = opts[:40]
	}
	payload := make([]byte, r.Intn(3000))
	r.Read(payload)
	spec := packettest.Spec{
		Src:     netip.AddrPortFrom(randAddr(r, v6), uint16(r.Intn(65536))),
		Dst:     netip.AddrPortFrom(randAddr(r, v6), uint16(r.Intn(65536))),
		ID:      uint16(r.Intn(65536)),
		Seq:     r.Uint32(),
		Ack:     r.Uint32(),
		Flags:   uint8(r.Intn(256)),
		Window:  uint16(r.Intn(65536)),
		Options: opts,
		Payload: payload,
		Partial: partial,
	}
	if partial && len(payload) > 1000 {
		spec.GSO = uint16(500 + r.Intn(900))
	}
	const headroom = 32
	buf = packettest.Build(spec, headroom)
	vnet, pkt = virtio.At(buf, headroom), buf[headroom:]
	return buf, vnet, pkt
}

// refValid checks a packet with gVisor's header package only.
func refValid(t *testing.T, pkt []byte, partial bool) {
	t.Helper()
	var src, dst tcpip.Address
	var tcp header.TCP
	if pkt[0]>>4 == 6 {
		ip := header.IPv6(pkt)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
		tcp = header.TCP(pkt[40:])
		if int(ip.PayloadLength()) != len(tcp) {
			t.Fatalf("IPv6 payload length %d != %d", ip.PayloadLength(), len(tcp))
		}
	} else {
		ip := header.IPv4(pkt)
		if !ip.IsChecksumValid() {
			t.Fatalf("IPv4 header checksum invalid")
		}
		if int(ip.TotalLength()) != len(pkt) {
			t.Fatalf("IPv4 total length %d != %d", ip.TotalLength(), len(pkt))
		}
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
		tcp = header.TCP(pkt[ip.HeaderLength():])
	}
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	if partial {
		if !sameSum(tcp.Checksum(), pseudo) {
			t.Fatalf("partial checksum %#04x, want pseudo-header sum %#04x", tcp.Checksum(), pseudo)
		}
		return
	}
	if !tcp.IsChecksumValid(src, dst, checksum.Checksum(tcp.Payload(), 0), uint16(len(tcp.Payload()))) {
		t.Fatalf("TCP checksum invalid")
	}
}

func randAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		r.Read(b[:])
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	r.Read(b[:])
	return netip.AddrFrom4(b)
}

// TestRewritesKeepChecksums applies every rewrite, at random, to random
// packets in both checksum modes and both IP versions, and checks the
// incrementally updated checksums against a full recomputation by gVisor.
func TestRewritesKeepChecksums(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 4000; i++ {
		v6, partial := r.Intn(2) == 0, r.Intn(2) == 0
		buf, vnet, pkt := build(r, v6, partial)
		var p TCP
		if err := p.Parse(pkt, vnet); err != nil {
			t.Fatalf("iter %d: parse: %v", i, err)
		}
		if !p.ChecksumsValid() {
			t.Fatalf("iter %d: fresh packet invalid", i)
		}
		wantPayload := append([]byte(nil), p.Payload()...)
		wantSeq := p.Seq()
		for j := r.Intn(8); j >= 0; j-- {
			switch r.Intn(10) {
			case 0:
				p.SetSrcAddr(randAddr(r, v6))
			case 1:
				p.SetDstAddr(randAddr(r, v6))
			case 2:
				p.SetSrcPort(uint16(r.Intn(65536)))
			case 3:
				p.SetDstPort(uint16(r.Intn(65536)))
			case 4:
				wantSeq = r.Uint32()
				p.SetSeq(wantSeq)
			case 5:
				p.SetAck(r.Uint32())
			case 6:
				p.SetWindow(uint16(r.Intn(65536)))
			case 7:
				if _, err := p.NopOptions(OptSACKPermitted, OptTimestamps, OptSACK); err != nil {
					t.Fatalf("nop: %v", err)
				}
				p.SetMSS(uint16(r.Intn(65536)))
			case 8:
				pl := p.PayloadLen()
				if pl == 0 {
					continue
				}
				head := r.Intn(pl + 1)
				tail := r.Intn(pl - head + 1)
				shift, err := p.TrimPayload(head, tail)
				if err != nil {
					t.Fatal(err)
				}
				buf = buf[shift:]
				wantPayload = wantPayload[head : len(wantPayload)-tail]
				wantSeq += uint32(head)
				// The buffer convention still holds: header in front.
				if &virtio.At(buf, 32)[0] != &p.Vnet[0] {
					t.Fatalf("vnet header not in front of the packet after trim")
				}
				if p.Partial() && p.Vnet.IsGSO() && int(p.Vnet.GSOSize()) >= p.PayloadLen() {
					t.Fatalf("GSO kept on a packet that fits one segment")
				}
			case 9:
				p.SetFlags(p.Flags() ^ FlagPSH)
			}
		}
		if _, err := p.SynOptions(); err != nil {
			t.Fatalf("iter %d: options broken: %v", i, err)
		}
		if !bytes.Equal(p.Payload(), wantPayload) {
			t.Fatalf("iter %d: payload changed", i)
		}
		if p.Seq() != wantSeq {
			t.Fatalf("iter %d: seq %d want %d", i, p.Seq(), wantSeq)
		}
		refValid(t, p.Buf, p.Partial())
		if !p.ChecksumsValid() {
			t.Fatalf("iter %d: ChecksumsValid disagrees with the reference", i)
		}
		if p.Partial() {
			// What the kernel does with NEEDS_CSUM: fold from csum_start.
			cs := int(p.Vnet.CsumStart())
			off := cs + int(p.Vnet.CsumOffset())
			c := ^checksum.Checksum(p.Buf[cs:], 0)
			binary.BigEndian.PutUint16(p.Buf[off:], c)
			refValid(t, p.Buf, false)
		}
	}
}

func TestNopOptionsRemovesSACKAndTimestamps(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 500; i++ {
		_, vnet, pkt := build(r, r.Intn(2) == 0, false)
		var p TCP
		if err := p.Parse(pkt, vnet); err != nil {
			t.Fatal(err)
		}
		before, err := p.SynOptions()
		if err != nil {
			continue // random options may be cut mid-option by the 40-byte limit
		}
		if _, err := p.NopOptions(OptSACKPermitted, OptTimestamps); err != nil {
			t.Fatal(err)
		}
		after, err := p.SynOptions()
		if err != nil {
			t.Fatal(err)
		}
		if after.SACKOK || after.Timestamps {
			t.Fatalf("SACK-permitted or timestamps survived")
		}
		if after.MSS != before.MSS || after.WSOK != before.WSOK || after.WS != before.WS {
			t.Fatalf("NOP-ing changed MSS/WS: %+v -> %+v", before, after)
		}
		refValid(t, p.Buf, false)
	}
}

func TestParseRejects(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	_, vnet, good := build(r, false, false)
	cases := map[string]struct {
		mut  func([]byte) []byte
		want error
	}{
		"empty":        {func(b []byte) []byte { return b[:0] }, ErrTruncated},
		"short ip":     {func(b []byte) []byte { return b[:12] }, ErrTruncated},
		"version 5":    {func(b []byte) []byte { b[0] = 0x55; return b }, ErrVersion},
		"ihl 4":        {func(b []byte) []byte { b[0] = 0x41; return b }, ErrBadHeader},
		"tot > len":    {func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], uint16(len(b)+1)); return b }, ErrTruncated},
		"fragment MF":  {func(b []byte) []byte { b[6] |= 0x20; return b }, ErrFragment},
		"fragment off": {func(b []byte) []byte { b[7] = 1; return b }, ErrFragment},
		"udp":          {func(b []byte) []byte { b[9] = ProtoUDP; return b }, ErrNotTCP},
		"doff 4":       {func(b []byte) []byte { b[20+12] = 0x40; return b }, ErrBadHeader},
		"doff > len":   {func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 30); b[20+12] = 0xf0; return b }, ErrTruncated},
	}
	for name, c := range cases {
		b := c.mut(append([]byte(nil), good...))
		var p TCP
		if err := p.Parse(b, vnet); err != c.want {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
	// A bad checksum parses but does not validate.
	b := append([]byte(nil), good...)
	b[len(b)-1] ^= 0xff
	if len(b) == 40+int(b[32]>>4)*4-20 {
		b[25] ^= 0xff
	}
	var p TCP
	if err := p.Parse(b, nil); err != nil {
		t.Fatal(err)
	}
	if p.PayloadLen() > 0 && p.ChecksumsValid() {
		t.Fatalf("corrupted packet validated")
	}
}

// TestHotPathAllocatesNothing: parsing and every per-packet rewrite.
func TestHotPathAllocatesNothing(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	_, vnet, pkt := build(r, false, false)
	a := netip.MustParseAddr("10.210.1.11")
	b := netip.MustParseAddr("10.200.100.1")
	allocs := testing.AllocsPerRun(1000, func() {
		var p TCP
		if err := p.Parse(pkt, vnet); err != nil {
			panic(err)
		}
		p.SetDstAddr(a)
		p.SetSrcAddr(b)
		p.SetDstPort(6379)
		p.SetSeq(p.Seq() + 1)
		p.SetAck(p.Ack() + 1)
		p.SetWindow(1000)
		p.NopOptions(OptSACKPermitted, OptTimestamps)
		_, _ = p.SynOptions()
		_ = p.ChecksumsValid()
	})
	if allocs != 0 {
		t.Fatalf("hot path allocates %.1f times per packet", allocs)
	}
}

func FuzzParse(f *testing.F) {
	r := rand.New(rand.NewSource(5))
	for i := 0; i < 8; i++ {
		_, _, pkt := build(r, i%2 == 0, false)
		f.Add(pkt)
	}
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p TCP
		if err := p.Parse(b, nil); err != nil {
			return
		}
		// Every accessor stays in bounds on anything Parse accepts.
		_ = p.SrcAddr()
		_ = p.DstAddr()
		_, _, _, _ = p.SrcPort(), p.DstPort(), p.Seq(), p.Ack()
		_ = p.Payload()
		_, _ = p.SynOptions()
		_ = p.ChecksumsValid()
		p.NopOptions(OptSACKPermitted, OptTimestamps)
		p.SetMSS(1)
		if p.HeaderLen()+p.PayloadLen() != len(p.Buf) {
			t.Fatalf("lengths inconsistent")
		}
		if pl := p.PayloadLen(); pl > 1 {
			if _, err := p.TrimPayload(1, 1); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func BenchmarkAnycastRewrite(b *testing.B) {
	r := rand.New(rand.NewSource(6))
	_, vnet, pkt := build(r, false, true)
	node := netip.MustParseAddr("10.210.1.11")
	vip := netip.MustParseAddr("10.200.100.1")
	b.SetBytes(int64(len(pkt)))
	for i := 0; i < b.N; i++ {
		var p TCP
		if err := p.Parse(pkt, vnet); err != nil {
			b.Fatal(err)
		}
		if i%2 == 0 {
			p.SetDstAddr(node)
		} else {
			p.SetDstAddr(vip)
		}
	}
}
