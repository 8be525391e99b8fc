package packet

import (
	"encoding/binary"
	"net/netip"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// Rewrites of header fields and payload trims, each with its checksum
// update.

// SetSrcAddr rewrites the source address (same IP version as the packet),
// updating the IPv4 header checksum and the TCP checksum.
func (p *TCP) SetSrcAddr(a netip.Addr) { p.setAddr(true, a) }

// SetDstAddr rewrites the destination address.
func (p *TCP) SetDstAddr(a netip.Addr) { p.setAddr(false, a) }

func (p *TCP) setAddr(src bool, a netip.Addr) {
	if p.v6 {
		off := ipv6Dst
		if src {
			off = ipv6Src
		}
		nb := a.As16()
		old := sum16(p.Buf[off : off+16])
		copy(p.Buf[off:off+16], nb[:])
		p.updateTCPCsumPseudo(old, sum16(nb[:]))
		return
	}
	off := ipv4Dst
	if src {
		off = ipv4Src
	}
	nb := a.As4()
	old := sum16(p.Buf[off : off+4])
	copy(p.Buf[off:off+4], nb[:])
	nw := sum16(nb[:])
	p.updateIPv4Csum(old, nw)
	p.updateTCPCsumPseudo(old, nw)
}

// SetSrcPort and SetDstPort rewrite ports.
func (p *TCP) SetSrcPort(v uint16) { p.set16(p.ipl+tcpSrcPort, v) }
func (p *TCP) SetDstPort(v uint16) { p.set16(p.ipl+tcpDstPort, v) }

// SetWindow rewrites the (unscaled) window field.
func (p *TCP) SetWindow(v uint16) { p.set16(p.ipl+tcpWindow, v) }

// SetSeq and SetAck rewrite sequence and acknowledgement numbers.
func (p *TCP) SetSeq(v uint32) { p.set32(p.ipl+tcpSeq, v) }
func (p *TCP) SetAck(v uint32) { p.set32(p.ipl+tcpAck, v) }

// SetFlags rewrites the flags byte (the data-offset nibble is kept).
func (p *TCP) SetFlags(f uint8) {
	o := p.ipl + tcpDataOff // the data-offset and flags word
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
		put16(p.Buf[ipv6PayloadLen:], newTCPLen)
	} else {
		old := binary.BigEndian.Uint16(p.Buf[ipv4TotalLen:])
		nw := uint16(len(p.Buf))
		put16(p.Buf[ipv4TotalLen:], nw)
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
