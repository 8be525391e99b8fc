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
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
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

// IPVersion returns the IP version nibble of buf (0 if empty).
func IPVersion(buf []byte) int {
	if len(buf) == 0 {
		return 0
	}
	return int(buf[0] >> 4)
}

// IPProto returns the transport protocol of an IPv4 or IPv6 packet, or -1.
func IPProto(buf []byte) int {
	switch IPVersion(buf) {
	case 4:
		if len(buf) >= 20 {
			return int(buf[9])
		}
	case 6:
		if len(buf) >= 40 {
			return int(buf[6])
		}
	}
	return -1
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
		if len(buf) < 20 {
			return ErrTruncated
		}
		ihl := int(buf[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(buf[2:]))
		if ihl < 20 || tot < ihl {
			return ErrBadHeader
		}
		if tot > len(buf) {
			return ErrTruncated
		}
		if binary.BigEndian.Uint16(buf[6:])&0x3fff != 0 { // MF or offset
			return ErrFragment
		}
		if buf[9] != ProtoTCP {
			return ErrNotTCP
		}
		buf = buf[:tot]
		p.v6, p.ipl = false, ihl
	case 6:
		if len(buf) < 40 {
			return ErrTruncated
		}
		pl := int(binary.BigEndian.Uint16(buf[4:]))
		if 40+pl > len(buf) {
			return ErrTruncated
		}
		switch buf[6] {
		case ProtoTCP:
		case 0, 43, 44, 51, 50, 60, 135, 139, 140, 253, 254:
			if buf[6] == 44 {
				return ErrFragment
			}
			return ErrIPv6ExtHdr
		default:
			return ErrNotTCP
		}
		buf = buf[:40+pl]
		p.v6, p.ipl = true, 40
	default:
		return ErrVersion
	}
	if len(buf)-p.ipl < 20 {
		return ErrTruncated
	}
	doff := int(buf[p.ipl+12]>>4) * 4
	if doff < 20 {
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

// IsV6 reports whether the packet is IPv6.
func (p *TCP) IsV6() bool { return p.v6 }

// Partial reports whether the TCP checksum field holds only the
// pseudo-header sum (NEEDS_CSUM).
func (p *TCP) Partial() bool { return len(p.Vnet) >= virtio.HdrLen && p.Vnet.NeedsCsum() }

// IPHeaderLen is the IP header length (20..60 for IPv4, 40 for IPv6).
func (p *TCP) IPHeaderLen() int { return p.ipl }

// HeaderLen is the IP plus TCP header length.
func (p *TCP) HeaderLen() int { return p.ipl + p.tcpl }

// tcp returns the TCP header and payload.
func (p *TCP) tcp() []byte { return p.Buf[p.ipl:] }

// SrcAddr and DstAddr return the IP addresses.
func (p *TCP) SrcAddr() netip.Addr {
	if p.v6 {
		return netip.AddrFrom16([16]byte(p.Buf[8:24]))
	}
	return netip.AddrFrom4([4]byte(p.Buf[12:16]))
}

func (p *TCP) DstAddr() netip.Addr {
	if p.v6 {
		return netip.AddrFrom16([16]byte(p.Buf[24:40]))
	}
	return netip.AddrFrom4([4]byte(p.Buf[16:20]))
}

// SrcAddr4 and DstAddr4 return IPv4 addresses as arrays (IPv4 only).
func (p *TCP) SrcAddr4() [4]byte { return [4]byte(p.Buf[12:16]) }
func (p *TCP) DstAddr4() [4]byte { return [4]byte(p.Buf[16:20]) }

func (p *TCP) SrcPort() uint16     { return binary.BigEndian.Uint16(p.Buf[p.ipl:]) }
func (p *TCP) DstPort() uint16     { return binary.BigEndian.Uint16(p.Buf[p.ipl+2:]) }
func (p *TCP) Seq() uint32         { return binary.BigEndian.Uint32(p.Buf[p.ipl+4:]) }
func (p *TCP) Ack() uint32         { return binary.BigEndian.Uint32(p.Buf[p.ipl+8:]) }
func (p *TCP) Flags() uint8        { return p.Buf[p.ipl+13] }
func (p *TCP) Window() uint16      { return binary.BigEndian.Uint16(p.Buf[p.ipl+14:]) }
func (p *TCP) Checksum() uint16    { return binary.BigEndian.Uint16(p.Buf[p.ipl+16:]) }
func (p *TCP) Options() []byte     { return p.Buf[p.ipl+20 : p.ipl+p.tcpl] }
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

// TTL returns the IPv4 TTL or IPv6 hop limit.
func (p *TCP) TTL() uint8 {
	if p.v6 {
		return p.Buf[7]
	}
	return p.Buf[8]
}

// --- checksum arithmetic -------------------------------------------------

// sumAdd adds b to a in ones' complement.
func sumAdd(a, b uint16) uint16 { return checksum.Combine(a, b) }

// updateField applies a change of 16-bit words, summarised as oldSum (sum of
// the old words) and newSum (sum of the new words), to a checksum field.
// Full mode: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'). Partial mode: the
// field is the uncomplemented sum S, S' = S + ~m + m'.
func updateField(field uint16, partial bool, oldSum, newSum uint16) uint16 {
	if partial {
		return sumAdd(sumAdd(field, ^oldSum), newSum)
	}
	return ^sumAdd(sumAdd(^field, ^oldSum), newSum)
}

func (p *TCP) tcpCsumOff() int { return p.ipl + 16 }

// updateTCPCsum updates the TCP checksum for a change covered by the full
// checksum only (header words, not pseudo-header): a no-op in partial mode.
func (p *TCP) updateTCPCsumHeader(oldSum, newSum uint16) {
	if p.Partial() {
		return
	}
	o := p.tcpCsumOff()
	f := binary.BigEndian.Uint16(p.Buf[o:])
	binary.BigEndian.PutUint16(p.Buf[o:], updateField(f, false, oldSum, newSum))
}

// updateTCPCsumPseudo updates the TCP checksum for a change in the
// pseudo-header (addresses, length): applies in both modes.
func (p *TCP) updateTCPCsumPseudo(oldSum, newSum uint16) {
	o := p.tcpCsumOff()
	f := binary.BigEndian.Uint16(p.Buf[o:])
	binary.BigEndian.PutUint16(p.Buf[o:], updateField(f, p.Partial(), oldSum, newSum))
}

func (p *TCP) updateIPv4Csum(oldSum, newSum uint16) {
	f := binary.BigEndian.Uint16(p.Buf[10:])
	binary.BigEndian.PutUint16(p.Buf[10:], updateField(f, false, oldSum, newSum))
}

// sum16 sums the 16-bit words of an even-length slice.
func sum16(b []byte) uint16 { return checksum.Checksum(b, 0) }

func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }

func sum32(v uint32) uint16 { return sumAdd(uint16(v>>16), uint16(v)) }

// --- rewrites -------------------------------------------------------------

// SetSrcAddr rewrites the source address (same IP version as the packet),
// updating the IPv4 header checksum and the TCP checksum.
func (p *TCP) SetSrcAddr(a netip.Addr) { p.setAddr(true, a) }

// SetDstAddr rewrites the destination address.
func (p *TCP) SetDstAddr(a netip.Addr) { p.setAddr(false, a) }

func (p *TCP) setAddr(src bool, a netip.Addr) {
	if p.v6 {
		off := 24
		if src {
			off = 8
		}
		nb := a.As16()
		old := sum16(p.Buf[off : off+16])
		copy(p.Buf[off:off+16], nb[:])
		p.updateTCPCsumPseudo(old, sum16(nb[:]))
		return
	}
	off := 16
	if src {
		off = 12
	}
	nb := a.As4()
	old := sum16(p.Buf[off : off+4])
	copy(p.Buf[off:off+4], nb[:])
	nw := sum16(nb[:])
	p.updateIPv4Csum(old, nw)
	p.updateTCPCsumPseudo(old, nw)
}

// SetSrcPort and SetDstPort rewrite ports.
func (p *TCP) SetSrcPort(v uint16) { p.set16(p.ipl, v) }
func (p *TCP) SetDstPort(v uint16) { p.set16(p.ipl+2, v) }

// SetWindow rewrites the (unscaled) window field.
func (p *TCP) SetWindow(v uint16) { p.set16(p.ipl+14, v) }

// SetSeq and SetAck rewrite sequence and acknowledgement numbers.
func (p *TCP) SetSeq(v uint32) { p.set32(p.ipl+4, v) }
func (p *TCP) SetAck(v uint32) { p.set32(p.ipl+8, v) }

// SetFlags rewrites the flags byte (the data-offset nibble is kept).
func (p *TCP) SetFlags(f uint8) {
	o := p.ipl + 12
	old := binary.BigEndian.Uint16(p.Buf[o:])
	nw := old&0xff00 | uint16(f)
	put16(p.Buf[o:], nw)
	p.updateTCPCsumHeader(old, nw)
}

func (p *TCP) set16(off int, v uint16) {
	old := binary.BigEndian.Uint16(p.Buf[off:])
	if old == v {
		return
	}
	put16(p.Buf[off:], v)
	p.updateTCPCsumHeader(old, v)
}

func (p *TCP) set32(off int, v uint32) {
	old := binary.BigEndian.Uint32(p.Buf[off:])
	if old == v {
		return
	}
	put32(p.Buf[off:], v)
	p.updateTCPCsumHeader(sum32(old), sum32(v))
}

// SetTTL rewrites the IPv4 TTL or IPv6 hop limit.
func (p *TCP) SetTTL(v uint8) {
	if p.v6 {
		p.Buf[7] = v
		return
	}
	old := binary.BigEndian.Uint16(p.Buf[8:])
	nw := uint16(v)<<8 | old&0xff
	put16(p.Buf[8:], nw)
	p.updateIPv4Csum(old, nw)
}

// --- options ----------------------------------------------------------------

// walkOptions calls fn for each option with its kind and its offset within
// p.Buf and its total length (kind and length bytes included). It returns
// ErrBadOptions for a malformed list. fn returning false stops the walk.
func (p *TCP) walkOptions(fn func(kind byte, off, n int) bool) error {
	start, end := p.ipl+20, p.ipl+p.tcpl
	for i := start; i < end; {
		k := p.Buf[i]
		switch k {
		case OptEnd:
			return nil
		case OptNOP:
			if !fn(k, i, 1) {
				return nil
			}
			i++
			continue
		}
		if i+1 >= end {
			return ErrBadOptions
		}
		n := int(p.Buf[i+1])
		if n < 2 || i+n > end {
			return ErrBadOptions
		}
		if !fn(k, i, n) {
			return nil
		}
		i += n
	}
	return nil
}

// ValidateOptions reports whether the option list is well formed.
func (p *TCP) ValidateOptions() error {
	return p.walkOptions(func(byte, int, int) bool { return true })
}

// SynOptions are the options the middlebox cares about on SYN and SYN-ACK.
type SynOptions struct {
	MSS          uint16 // 0 if absent
	WS           uint8  // window scale shift, valid if WSOK
	WSOK         bool
	SACKOK       bool
	Timestamps   bool
	TSVal, TSEcr uint32
}

// SynOptions parses MSS, window scale, SACK-permitted and timestamps.
func (p *TCP) SynOptions() (SynOptions, error) {
	var o SynOptions
	err := p.walkOptions(func(k byte, off, n int) bool {
		switch {
		case k == OptMSS && n == 4:
			o.MSS = binary.BigEndian.Uint16(p.Buf[off+2:])
		case k == OptWindowScale && n == 3:
			o.WS, o.WSOK = p.Buf[off+2], true
			if o.WS > 14 {
				o.WS = 14
			}
		case k == OptSACKPermitted && n == 2:
			o.SACKOK = true
		case k == OptTimestamps && n == 10:
			o.Timestamps = true
			o.TSVal = binary.BigEndian.Uint32(p.Buf[off+2:])
			o.TSEcr = binary.BigEndian.Uint32(p.Buf[off+6:])
		}
		return true
	})
	return o, err
}

// NopOptions overwrites in place, with NOPs, every option whose kind is in
// kinds (e.g. OptSACKPermitted, OptTimestamps, OptSACK), updating the
// checksum. It returns how many options it removed.
func (p *TCP) NopOptions(kinds ...byte) (int, error) {
	removed := 0
	err := p.walkOptions(func(k byte, off, n int) bool {
		for _, want := range kinds {
			if k == want {
				p.nopRange(off, n)
				removed++
				break
			}
		}
		return true
	})
	return removed, err
}

// nopRange sets n bytes at off to NOP with a checksum update. Words are
// aligned relative to the TCP header start, which is 4-byte aligned in
// the packet, so we update whole aligned 16-bit words.
func (p *TCP) nopRange(off, n int) {
	// Work on the aligned span [a, b) of 16-bit words relative to p.ipl.
	rel := off - p.ipl
	a := p.ipl + rel&^1
	b := p.ipl + (rel+n+1)&^1
	old := sum16(p.Buf[a:b])
	for i := off; i < off+n; i++ {
		p.Buf[i] = OptNOP
	}
	p.updateTCPCsumHeader(old, sum16(p.Buf[a:b]))
}

// SetMSS rewrites an existing MSS option's value; it reports whether one
// was present.
func (p *TCP) SetMSS(v uint16) bool {
	found := false
	p.walkOptions(func(k byte, off, n int) bool {
		if k == OptMSS && n == 4 {
			found = true
			p.rewriteOptBytes(off+2, 2, func(b []byte) { put16(b, v) })
			return false
		}
		return true
	})
	return found
}

// SetWindowScale rewrites an existing window-scale option's shift; it
// reports whether one was present.
func (p *TCP) SetWindowScale(ws uint8) bool {
	found := false
	p.walkOptions(func(k byte, off, n int) bool {
		if k == OptWindowScale && n == 3 {
			found = true
			p.rewriteOptBytes(off+2, 1, func(b []byte) { b[0] = ws })
			return false
		}
		return true
	})
	return found
}

// rewriteOptBytes lets fn change n bytes at off and updates the checksum
// over the aligned words covering them.
func (p *TCP) rewriteOptBytes(off, n int, fn func([]byte)) {
	rel := off - p.ipl
	a := p.ipl + rel&^1
	b := p.ipl + (rel+n+1)&^1
	old := sum16(p.Buf[a:b])
	fn(p.Buf[off : off+n])
	p.updateTCPCsumHeader(old, sum16(p.Buf[a:b]))
}

// --- payload trim --------------------------------------------------------

// TrimPayload removes head bytes from the front and tail bytes from the end
// of the payload. The sequence number advances by head; IP length and
// checksums are updated (full mode: the TCP checksum is recomputed over the
// remaining segment; partial mode: only the pseudo-header length changes).
// GSO is cleared when the remaining payload fits one segment.
//
// To remove head bytes without moving payload, the headers (and the
// virtio-net header in front of them, when p.Vnet directly precedes
// p.Buf) move forward by head bytes: afterwards p.Buf starts head bytes
// later in the underlying array, and the caller must advance its buffer
// by the returned shift (e.g. bufs[i] = bufs[i][shift:]).
// A FIN is cleared when tail > 0 (the FIN follows the last byte).
func (p *TCP) TrimPayload(head, tail int) (shift int, err error) {
	pl := p.PayloadLen()
	if head < 0 || tail < 0 || head+tail > pl {
		return 0, ErrTrimTooMuch
	}
	if head == 0 && tail == 0 {
		return 0, nil
	}
	hl := p.ipl + p.tcpl
	oldTCPLen := uint16(len(p.Buf) - p.ipl)
	seq := p.Seq()
	if tail > 0 && p.Has(FlagFIN) {
		p.SetFlags(p.Flags() &^ FlagFIN)
	}
	if tail > 0 {
		p.Buf = p.Buf[:len(p.Buf)-tail]
	}
	if head > 0 {
		copy(p.Buf[head:head+hl], p.Buf[:hl])
		if p.vnetAdjacent() {
			full := p.Vnet[:virtio.HdrLen+head]
			copy(full[head:], full[:virtio.HdrLen])
			p.Vnet = full[head : head+virtio.HdrLen]
		}
		p.Buf = p.Buf[head:]
		// seq advance: header word change (full mode only).
		p.SetSeq(seq + uint32(head))
	}
	newTCPLen := uint16(len(p.Buf) - p.ipl)
	// IP length.
	if p.v6 {
		put16(p.Buf[4:], newTCPLen)
	} else {
		old := binary.BigEndian.Uint16(p.Buf[2:])
		nw := uint16(len(p.Buf))
		put16(p.Buf[2:], nw)
		p.updateIPv4Csum(old, nw)
	}
	if p.Partial() {
		p.updateTCPCsumPseudo(oldTCPLen, newTCPLen)
		if p.Vnet.IsGSO() && int(p.Vnet.GSOSize()) >= p.PayloadLen() {
			p.Vnet.SetGSOType(virtio.GSONone)
			p.Vnet.SetGSOSize(0)
		}
	} else {
		p.ComputeTCPChecksum()
	}
	return head, nil
}

// vnetAdjacent reports whether p.Vnet sits directly in front of p.Buf in
// the same array (the Device buffer convention).
func (p *TCP) vnetAdjacent() bool {
	const n = virtio.HdrLen
	return len(p.Vnet) == n && cap(p.Vnet) > n && &p.Vnet[:n+1][n] == &p.Buf[0]
}

// --- full checksums ---------------------------------------------------------

// pseudoSum is the pseudo-header sum for the current addresses and length.
func (p *TCP) pseudoSum() uint16 {
	tl := uint16(len(p.Buf) - p.ipl)
	var s uint16
	if p.v6 {
		s = sum16(p.Buf[8:40])
	} else {
		s = sum16(p.Buf[12:20])
	}
	s = sumAdd(s, ProtoTCP)
	return sumAdd(s, tl)
}

// ComputeTCPChecksum writes the complete TCP checksum (full mode) and
// clears NEEDS_CSUM.
func (p *TCP) ComputeTCPChecksum() {
	o := p.tcpCsumOff()
	put16(p.Buf[o:], 0)
	c := ^checksum.Checksum(p.Buf[p.ipl:], p.pseudoSum())
	put16(p.Buf[o:], c)
	if p.Partial() {
		p.Vnet.SetFlags(p.Vnet.Flags() &^ virtio.FlagNeedsCsum)
	}
}

// ComputeIPChecksum writes the IPv4 header checksum (no-op for IPv6).
func (p *TCP) ComputeIPChecksum() {
	if p.v6 {
		return
	}
	put16(p.Buf[10:], 0)
	put16(p.Buf[10:], ^sum16(p.Buf[:p.ipl]))
}

// SetPartial switches a full-checksum packet to partial mode (NEEDS_CSUM
// with csum_start/csum_offset), as an offload TUN expects on write.
func (p *TCP) SetPartial() {
	if len(p.Vnet) < virtio.HdrLen {
		return
	}
	p.Vnet.SetFlags(p.Vnet.Flags() | virtio.FlagNeedsCsum)
	p.Vnet.SetCsumStart(uint16(p.ipl))
	p.Vnet.SetCsumOffset(16)
	put16(p.Buf[p.tcpCsumOff():], p.pseudoSum())
}

// ChecksumsValid verifies the IPv4 header checksum and, in full mode, the
// TCP checksum; in partial mode, that the field equals the pseudo-header
// sum. This reads the whole payload: a slow path for ingress validation and
// tests.
func (p *TCP) ChecksumsValid() bool {
	if !p.v6 && sum16(p.Buf[:p.ipl]) != 0xffff {
		return false
	}
	if p.Partial() {
		return sameSum(p.Checksum(), p.pseudoSum())
	}
	return checksum.Checksum(p.Buf[p.ipl:], p.pseudoSum()) == 0xffff
}

// IPv4HeaderValid verifies only the IPv4 header checksum (true for IPv6).
func (p *TCP) IPv4HeaderValid() bool {
	return p.v6 || sum16(p.Buf[:p.ipl]) == 0xffff
}

// sameSum compares ones' complement sums, for which 0x0000 and 0xffff are
// both zero.
func sameSum(a, b uint16) bool {
	if a == 0xffff {
		a = 0
	}
	if b == 0xffff {
		b = 0
	}
	return a == b
}
