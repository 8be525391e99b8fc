// Package packet is a zero-copy, zero-allocation view of one IPv4 or IPv6
// TCP packet with its virtio-net header, and the rewrites the middlebox
// makes: addresses, ports, sequence and acknowledgement numbers, window,
// option edits and payload trims, each with an incremental checksum update.
//
// Two checksum modes exist, chosen by the virtio-net header:
//
//   - full (no NEEDS_CSUM flag): the TCP checksum field is the complete,
//     complemented Internet checksum; every rewrite updates it (RFC 1624).
//   - partial (NEEDS_CSUM, what an offload TUN hands over): the field holds
//     only the folded, uncomplemented pseudo-header sum and the kernel
//     completes it; only address and length changes touch it.
//
// The IPv4 header checksum is always complete and always updated.
//
// A TCP value aliases the buffer it was parsed from; it is a plain value,
// not safe for concurrent use, and owns nothing.
package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// TCP flags.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
	FlagURG = 0x20
	FlagECE = 0x40
	FlagCWR = 0x80
)

// TCP option kinds.
const (
	OptEnd           = 0
	OptNOP           = 1
	OptMSS           = 2
	OptWindowScale   = 3
	OptSACKPermitted = 4
	OptSACK          = 5
	OptTimestamps    = 8
)

// Parse errors. Each names a reason a packet is dropped and counted.
var (
	ErrTruncated   = errors.New("packet: truncated")
	ErrVersion     = errors.New("packet: not IPv4 or IPv6")
	ErrFragment    = errors.New("packet: IP fragment")
	ErrNotTCP      = errors.New("packet: not TCP")
	ErrBadHeader   = errors.New("packet: bad header length")
	ErrIPv6ExtHdr  = errors.New("packet: IPv6 extension headers not supported")
	ErrBadOptions  = errors.New("packet: malformed TCP options")
	ErrTrimTooMuch = errors.New("packet: trim larger than payload")
)

// Protocol numbers.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP is a view of one TCP packet: Buf is the IP packet (exactly its
// length), Vnet its virtio-net header (nil means a plain packet with a
// complete checksum).
type TCP struct {
	Buf  []byte
	Vnet virtio.Hdr
	v6   bool
	ipl  int // IP header length
	tcpl int // TCP header length
}

// Parse makes p a view of the TCP packet in buf, whose virtio-net header is
// vnet (may be nil). It checks structure only (lengths, fragments,
// protocol); ChecksumsValid checks checksums. buf is cut to the IP length.
func (p *TCP) Parse(buf []byte, vnet virtio.Hdr) error {
	if len(buf) < 1 {
		return ErrTruncated
	}
	switch buf[0] >> 4 {
	case 4:
		if len(buf) < IPv4MinLen {
			return ErrTruncated
		}
		ihl := int(buf[ipv4VerIHL]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(buf[ipv4TotalLen:]))
		if ihl < IPv4MinLen || tot < ihl {
			return ErrBadHeader
		}
		if tot > len(buf) {
			return ErrTruncated
		}
		if binary.BigEndian.Uint16(buf[ipv4FragOff:])&ipv4FragMask != 0 { // MF or offset
			return ErrFragment
		}
		if buf[ipv4Proto] != ProtoTCP {
			return ErrNotTCP
		}
		buf = buf[:tot]
		p.v6, p.ipl = false, ihl
	case 6:
		if len(buf) < IPv6Len {
			return ErrTruncated
		}
		pl := int(binary.BigEndian.Uint16(buf[ipv6PayloadLen:]))
		if IPv6Len+pl > len(buf) {
			return ErrTruncated
		}
		switch buf[ipv6NextHdr] {
		case ProtoTCP:
		case 0, 43, 44, 51, 50, 60, 135, 139, 140, 253, 254:
			if buf[ipv6NextHdr] == 44 {
				return ErrFragment
			}
			return ErrIPv6ExtHdr
		default:
			return ErrNotTCP
		}
		buf = buf[:IPv6Len+pl]
		p.v6, p.ipl = true, IPv6Len
	default:
		return ErrVersion
	}
	if len(buf)-p.ipl < TCPMinLen {
		return ErrTruncated
	}
	doff := int(buf[p.ipl+tcpDataOff]>>4) * 4
	if doff < TCPMinLen {
		return ErrBadHeader
	}
	if p.ipl+doff > len(buf) {
		return ErrTruncated
	}
	p.tcpl = doff
	p.Buf = buf
	p.Vnet = vnet
	return nil
}

// Partial reports whether the TCP checksum field holds only the
// pseudo-header sum (NEEDS_CSUM).
func (p *TCP) Partial() bool { return len(p.Vnet) >= virtio.HdrLen && p.Vnet.NeedsCsum() }

// IPHeaderLen is the IP header length (20..60 for IPv4, 40 for IPv6).
func (p *TCP) IPHeaderLen() int { return p.ipl }

// HeaderLen is the IP plus TCP header length.
func (p *TCP) HeaderLen() int { return p.ipl + p.tcpl }

// SrcAddr and DstAddr return the IP addresses.
func (p *TCP) SrcAddr() netip.Addr {
	if p.v6 {
		return netip.AddrFrom16([16]byte(p.Buf[ipv6Src:]))
	}
	return netip.AddrFrom4([4]byte(p.Buf[ipv4Src:]))
}

func (p *TCP) DstAddr() netip.Addr {
	if p.v6 {
		return netip.AddrFrom16([16]byte(p.Buf[ipv6Dst:]))
	}
	return netip.AddrFrom4([4]byte(p.Buf[ipv4Dst:]))
}

// SrcAddr4 and DstAddr4 return IPv4 addresses as arrays (IPv4 only).
func (p *TCP) SrcAddr4() [4]byte { return [4]byte(p.Buf[ipv4Src:]) }
func (p *TCP) DstAddr4() [4]byte { return [4]byte(p.Buf[ipv4Dst:]) }

func (p *TCP) SrcPort() uint16     { return binary.BigEndian.Uint16(p.Buf[p.ipl+tcpSrcPort:]) }
func (p *TCP) DstPort() uint16     { return binary.BigEndian.Uint16(p.Buf[p.ipl+tcpDstPort:]) }
func (p *TCP) Seq() uint32         { return binary.BigEndian.Uint32(p.Buf[p.ipl+tcpSeq:]) }
func (p *TCP) Ack() uint32         { return binary.BigEndian.Uint32(p.Buf[p.ipl+tcpAck:]) }
func (p *TCP) Flags() uint8        { return p.Buf[p.ipl+tcpFlags] }
func (p *TCP) Window() uint16      { return binary.BigEndian.Uint16(p.Buf[p.ipl+tcpWindow:]) }
func (p *TCP) Checksum() uint16    { return binary.BigEndian.Uint16(p.Buf[p.ipl+tcpCsum:]) }
func (p *TCP) Options() []byte     { return p.Buf[p.ipl+tcpOptions : p.ipl+p.tcpl] }
func (p *TCP) Payload() []byte     { return p.Buf[p.ipl+p.tcpl:] }
func (p *TCP) PayloadLen() int     { return len(p.Buf) - p.ipl - p.tcpl }
func (p *TCP) Has(flag uint8) bool { return p.Flags()&flag != 0 }

// SeqLen is the sequence space the segment occupies: payload plus one for
// each of SYN and FIN.
func (p *TCP) SeqLen() int {
	n := p.PayloadLen()
	f := p.Flags()
	if f&FlagSYN != 0 {
		n++
	}
	if f&FlagFIN != 0 {
		n++
	}
	return n
}
