package packet

import (
	"encoding/binary"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Checksum arithmetic: incremental updates (RFC 1624) in full and partial
// mode, and complete checksums.

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

func (p *TCP) tcpCsumOff() int { return p.ipl + tcpCsum }

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
	f := binary.BigEndian.Uint16(p.Buf[ipv4Csum:])
	binary.BigEndian.PutUint16(p.Buf[ipv4Csum:], updateField(f, false, oldSum, newSum))
}

// sum16 sums the 16-bit words of an even-length slice.
func sum16(b []byte) uint16 { return checksum.Checksum(b, 0) }

func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }

func sum32(v uint32) uint16 { return sumAdd(uint16(v>>16), uint16(v)) }

// pseudoSum is the pseudo-header sum for the current addresses and length.
func (p *TCP) pseudoSum() uint16 {
	tl := uint16(len(p.Buf) - p.ipl)
	var s uint16
	if p.v6 {
		s = sum16(p.Buf[ipv6Src : ipv6Dst+16])
	} else {
		s = sum16(p.Buf[ipv4Src : ipv4Dst+4])
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
	put16(p.Buf[ipv4Csum:], 0)
	put16(p.Buf[ipv4Csum:], ^sum16(p.Buf[:p.ipl]))
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
