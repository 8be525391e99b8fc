package packet

import (
	"encoding/binary"
	"net/netip"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// Fields are the header fields and payload of a TCP packet that Build
// writes: the segments the middlebox makes itself (SYN-ACKs, RSTs, pure
// ACKs, and reply bytes ackmerge held back and delivers on a branch
// removal).
type Fields struct {
	Src, Dst netip.AddrPort // one IP family: IPv4 or IPv6
	Seq, Ack uint32
	Flags    uint8
	Window   uint16
	Options  []byte // a multiple of 4 bytes long
	Payload  []byte // copied after the header
}

// Len is the length of the IP packet Build writes for f.
func (f *Fields) Len() int {
	ipl := IPv4MinLen
	if f.Src.Addr().Is6() {
		ipl = IPv6Len
	}
	return ipl + TCPMinLen + len(f.Options) + len(f.Payload)
}

// Build writes the packet f describes into buf[:f.Len()] (IPv4 with DF and
// TTL 64, or IPv6 with hop limit 64), with complete checksums, clears vnet
// (a plain packet; nil for none) and makes p a view of it. buf must hold
// f.Len() bytes.
func (p *TCP) Build(buf []byte, vnet virtio.Hdr, f *Fields) error {
	if v4 := f.Src.Addr().Is4(); v4 == f.Src.Addr().Is6() || v4 != f.Dst.Addr().Is4() || f.Dst.Addr().Is6() == v4 {
		return ErrVersion // an invalid address, or two families
	}
	n := f.Len()
	if len(buf) < n || len(f.Options)%4 != 0 || len(f.Options) > 40 {
		return ErrBadHeader
	}
	b := buf[:n]
	clear(b)
	ipl := IPv4MinLen
	if f.Src.Addr().Is6() {
		ipl = IPv6Len
		b[ipv6VerTC] = 6 << 4
		binary.BigEndian.PutUint16(b[ipv6PayloadLen:], uint16(n-ipl))
		b[ipv6NextHdr] = ProtoTCP
		b[ipv6HopLimit] = defaultTTL
		s, d := f.Src.Addr().As16(), f.Dst.Addr().As16()
		copy(b[ipv6Src:], s[:])
		copy(b[ipv6Dst:], d[:])
	} else {
		b[ipv4VerIHL] = 4<<4 | IPv4MinLen/4
		binary.BigEndian.PutUint16(b[ipv4TotalLen:], uint16(n))
		binary.BigEndian.PutUint16(b[ipv4FragOff:], ipv4FlagDF)
		b[ipv4TTL] = defaultTTL
		b[ipv4Proto] = ProtoTCP
		s, d := f.Src.Addr().As4(), f.Dst.Addr().As4()
		copy(b[ipv4Src:], s[:])
		copy(b[ipv4Dst:], d[:])
	}
	t := b[ipl:]
	binary.BigEndian.PutUint16(t[tcpSrcPort:], f.Src.Port())
	binary.BigEndian.PutUint16(t[tcpDstPort:], f.Dst.Port())
	binary.BigEndian.PutUint32(t[tcpSeq:], f.Seq)
	binary.BigEndian.PutUint32(t[tcpAck:], f.Ack)
	t[tcpDataOff] = byte((TCPMinLen+len(f.Options))/4) << 4
	t[tcpFlags] = f.Flags
	binary.BigEndian.PutUint16(t[tcpWindow:], f.Window)
	copy(t[tcpOptions:], f.Options)
	copy(t[TCPMinLen+len(f.Options):], f.Payload)
	if len(vnet) >= virtio.HdrLen {
		vnet.Clear()
	}
	if err := p.Parse(b, vnet); err != nil {
		return err
	}
	p.ComputeIPChecksum()
	p.ComputeTCPChecksum()
	return nil
}
