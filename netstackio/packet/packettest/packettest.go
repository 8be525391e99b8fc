// Package packettest builds test packets with gVisor's header encoders,
// independently of netstackio/packet, so tests can check the middlebox's
// rewrites against a reference. It is test support: nothing in the
// production binary imports it.
package packettest

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Spec describes a test TCP packet.
type Spec struct {
	Src, Dst netip.AddrPort // one IP family
	ID       uint16         // IPv4 identification
	Seq, Ack uint32
	Flags    uint8
	Window   uint16
	Options  []byte // padded with NOPs to a multiple of 4 bytes
	Payload  []byte
	Partial  bool   // the checksum field holds the pseudo-header sum, NEEDS_CSUM set
	GSO      uint16 // a TCP GSO super-packet with this segment size (0: none)
}

// Build lays s out with gVisor's encoders in a new buffer: the packet at
// buf[offset:], its virtio-net header at buf[offset-virtio.HdrLen:offset],
// with complete checksums (or the pseudo-header sum if s.Partial).
func Build(s Spec, offset int) []byte {
	v6 := s.Src.Addr().Is6()
	ipl := header.IPv4MinimumSize
	if v6 {
		ipl = header.IPv6MinimumSize
	}
	opts := s.Options
	for len(opts)%4 != 0 {
		opts = append(append([]byte(nil), opts...), header.TCPOptionNOP)
	}
	tl := header.TCPMinimumSize + len(opts) + len(s.Payload)
	buf := make([]byte, offset+ipl+tl)
	vnet := virtio.At(buf, offset)
	pkt := buf[offset:]
	src, dst := addr(s.Src.Addr()), addr(s.Dst.Addr())
	if v6 {
		header.IPv6(pkt).Encode(&header.IPv6Fields{PayloadLength: uint16(tl), TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: src, DstAddr: dst})
	} else {
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(ipl + tl), ID: s.ID, TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	t := header.TCP(pkt[ipl:])
	t.Encode(&header.TCPFields{SrcPort: s.Src.Port(), DstPort: s.Dst.Port(), SeqNum: s.Seq, AckNum: s.Ack,
		DataOffset: uint8(header.TCPMinimumSize + len(opts)), Flags: header.TCPFlags(s.Flags), WindowSize: s.Window})
	copy(t[header.TCPMinimumSize:], opts)
	copy(t[header.TCPMinimumSize+len(opts):], s.Payload)
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tl))
	if s.Partial {
		t.SetChecksum(pseudo)
		vnet.SetFlags(virtio.FlagNeedsCsum)
		vnet.SetCsumStart(uint16(ipl))
		vnet.SetCsumOffset(header.TCPChecksumOffset)
	} else {
		t.SetChecksum(^checksum.Checksum(t, pseudo))
	}
	if s.GSO > 0 {
		vnet.SetHdrLen(uint16(ipl + header.TCPMinimumSize + len(opts)))
		vnet.SetGSOSize(s.GSO)
		if v6 {
			vnet.SetGSOType(virtio.GSOTCPv6)
		} else {
			vnet.SetGSOType(virtio.GSOTCPv4)
		}
	}
	return buf
}

func addr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// RandAddr is a random IPv4 or IPv6 address.
func RandAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:], r.Uint64())
		binary.BigEndian.PutUint64(b[8:], r.Uint64())
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], r.Uint32())
	return netip.AddrFrom4(b)
}

// TCPPacket builds a random IPv4 or IPv6 TCP packet with payloadLen random
// bytes and optLen bytes of NOP options, with a complete checksum
// (partial=false) or with the pseudo-header sum only (partial=true, as an
// offload device delivers it), and the virtio-net header that goes with
// it. gso > 0 marks it as a TCP GSO packet with that segment size.
func TCPPacket(r *rand.Rand, v6 bool, payloadLen, optLen int, partial bool, gso int) (virtio.Hdr, []byte) {
	s := Spec{
		Src:     netip.AddrPortFrom(RandAddr(r, v6), uint16(r.Uint32())),
		Dst:     netip.AddrPortFrom(RandAddr(r, v6), uint16(r.Uint32())),
		ID:      uint16(r.Uint32()),
		Seq:     r.Uint32(),
		Ack:     r.Uint32(),
		Flags:   uint8(header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin | header.TCPFlagCwr),
		Window:  uint16(r.Uint32()),
		Options: make([]byte, optLen),
		Payload: make([]byte, payloadLen),
		Partial: partial,
		GSO:     uint16(gso),
	}
	for i := range s.Options {
		s.Options[i] = header.TCPOptionNOP
	}
	for i := range s.Payload {
		s.Payload[i] = byte(r.Uint32())
	}
	buf := Build(s, virtio.HdrLen)
	return virtio.Hdr(buf[:virtio.HdrLen]), buf[virtio.HdrLen:]
}

// TCPChecksumOK verifies the IP (v4) and TCP checksums of pkt from scratch.
func TCPChecksumOK(pkt []byte) bool {
	var src, dst tcpip.Address
	var tcp header.TCP
	if pkt[0]>>4 == 4 {
		ip := header.IPv4(pkt)
		if !ip.IsChecksumValid() {
			return false
		}
		src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(ip.Payload())
	} else {
		ip := header.IPv6(pkt)
		src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(ip.Payload())
	}
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	return checksum.Checksum(tcp, pseudo) == 0xffff
}

// WithHeadroom returns a buffer holding h and pkt at offset.
func WithHeadroom(h virtio.Hdr, pkt []byte, offset int) []byte {
	b := make([]byte, offset+len(pkt))
	copy(b[offset-virtio.HdrLen:], h)
	copy(b[offset:], pkt)
	return b
}
