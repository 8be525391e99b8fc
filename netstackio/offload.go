package netstackio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Errors for packets whose virtio-net header cannot be honoured. Devices
// drop such packets, count them in Stats.Invalid and keep going.
var (
	ErrBadVnetHdr  = errors.New("netstackio: invalid virtio-net header for packet")
	ErrBadPacket   = errors.New("netstackio: malformed packet")
	ErrSegTooLarge = errors.New("netstackio: segment does not fit the scratch buffer")
)

// Stats counts what a Device moved and what it dropped. All fields are
// cumulative since the device was opened.
type Stats struct {
	RxPackets uint64 // packets returned by Read
	TxPackets uint64 // packets accepted by Write (before software segmentation)
	RxGSO     uint64 // packets returned by Read that were GSO super-packets
	TxSegs    uint64 // packets put on the link by Write, after software segmentation
	Dropped   uint64 // packets dropped because a queue was full or the peer closed
	Invalid   uint64 // packets dropped as malformed (bad header, kernel refused, truncated)
}

// StatsReporter is implemented by every Device in this package.
type StatsReporter interface {
	Stats() Stats
}

// Counters is the atomic form of Stats, embedded by devices (here and in
// netstacktest), which so implement StatsReporter.
type Counters struct {
	Rx, Tx, RxGSO, TxSegs, Dropped, Invalid atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (c *Counters) Stats() Stats {
	return Stats{
		RxPackets: c.Rx.Load(),
		TxPackets: c.Tx.Load(),
		RxGSO:     c.RxGSO.Load(),
		TxSegs:    c.TxSegs.Load(),
		Dropped:   c.Dropped.Load(),
		Invalid:   c.Invalid.Load(),
	}
}

// NeedsSoftwareOffload reports whether a packet with header h asks for work
// (a partial checksum or segmentation) that a non-offload device must do in
// software before sending it.
func NeedsSoftwareOffload(h virtio.Hdr) bool {
	return h.NeedsCsum() || h.IsGSO()
}

// CompleteChecksum finishes, in place, the partial checksum that h asks for
// (virtio.FlagNeedsCsum: the field at CsumStart+CsumOffset holds only the
// pseudo-header sum) and clears the flag in h. It does nothing when h does
// not ask for a checksum. pkt is the packet without the header.
func CompleteChecksum(h virtio.Hdr, pkt []byte) error {
	if !h.NeedsCsum() {
		return nil
	}
	start, off := int(h.CsumStart()), int(h.CsumOffset())
	if start+off+2 > len(pkt) || start >= len(pkt) {
		return fmt.Errorf("%w: csum_start %d + csum_offset %d beyond packet of %d bytes", ErrBadVnetHdr, start, off, len(pkt))
	}
	sum := checksum.Checksum(pkt[start:], 0)
	binary.BigEndian.PutUint16(pkt[start+off:], ^sum)
	h.SetFlags(h.Flags() &^ virtio.FlagNeedsCsum)
	return nil
}

// SoftwareOffload performs the offloads h requests on pkt without touching
// pkt: it builds each resulting packet (one if h asks only for a checksum,
// one per segment for TCP GSO) in scratch and calls emit with it. The slice
// passed to emit is valid only during the call. A packet that needs no
// offload is passed to emit as is. scratch must hold the largest resulting
// packet (headers + GSOSize, or len(pkt) without GSO).
//
// It is the slow path of non-offload devices; it does not allocate.
func SoftwareOffload(h virtio.Hdr, pkt []byte, scratch []byte, emit func([]byte) error) error {
	if !h.IsGSO() {
		if !h.NeedsCsum() {
			return emit(pkt)
		}
		if len(pkt) > len(scratch) {
			return ErrSegTooLarge
		}
		seg := scratch[:len(pkt)]
		copy(seg, pkt)
		var hc [virtio.HdrLen]byte
		copy(hc[:], h)
		if err := CompleteChecksum(virtio.Hdr(hc[:]), seg); err != nil {
			return err
		}
		return emit(seg)
	}
	gt := h.GSOType() &^ virtio.GSOECN
	if gt != virtio.GSOTCPv4 && gt != virtio.GSOTCPv6 {
		return fmt.Errorf("%w: unsupported GSO type %d", ErrBadVnetHdr, gt)
	}
	mss := int(h.GSOSize())
	if mss == 0 {
		return fmt.Errorf("%w: GSO packet with gso_size 0", ErrBadVnetHdr)
	}
	ipLen, proto, err := ipHeader(pkt)
	if err != nil {
		return err
	}
	if proto != uint8(header.TCPProtocolNumber) {
		return fmt.Errorf("%w: TCP GSO on protocol %d", ErrBadVnetHdr, proto)
	}
	isV4 := pkt[0]>>4 == 4
	if (gt == virtio.GSOTCPv4) != isV4 {
		return fmt.Errorf("%w: GSO type %d on IPv%d packet", ErrBadVnetHdr, gt, pkt[0]>>4)
	}
	if len(pkt) < ipLen+header.TCPMinimumSize {
		return fmt.Errorf("%w: truncated TCP header", ErrBadPacket)
	}
	tcpLen := int(pkt[ipLen+12]>>4) * 4
	if tcpLen < header.TCPMinimumSize || ipLen+tcpLen > len(pkt) {
		return fmt.Errorf("%w: bad TCP data offset %d", ErrBadPacket, tcpLen)
	}
	hdrLen := ipLen + tcpLen
	payload := pkt[hdrLen:]
	if hdrLen+min(mss, len(payload)) > len(scratch) {
		return ErrSegTooLarge
	}
	tcp0 := header.TCP(pkt[ipLen:])
	seq0 := tcp0.SequenceNumber()
	flags0 := tcp0.Flags()
	var id0 uint16
	if isV4 {
		id0 = header.IPv4(pkt).ID()
	}
	first := true
	for off := 0; first || off < len(payload); off += mss {
		n := min(mss, len(payload)-off)
		last := off+n >= len(payload)
		seg := scratch[:hdrLen+n]
		copy(seg, pkt[:hdrLen])
		copy(seg[hdrLen:], payload[off:off+n])
		var src, dst []byte
		if isV4 {
			ip := header.IPv4(seg)
			ip.SetTotalLength(uint16(len(seg)))
			ip.SetID(id0 + uint16(off/mss))
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
			src, dst = seg[12:16], seg[16:20]
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)-header.IPv6MinimumSize))
			src, dst = seg[8:24], seg[24:40]
		}
		tcp := header.TCP(seg[ipLen:])
		tcp.SetSequenceNumber(seq0 + uint32(off))
		f := flags0
		if !last {
			f &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		if !first {
			f &^= header.TCPFlagCwr
		}
		tcp.SetFlags(uint8(f))
		tcp.SetChecksum(0)
		sum := pseudoSum(src, dst, uint16(len(seg)-ipLen))
		tcp.SetChecksum(^checksum.Checksum(seg[ipLen:], sum))
		if err := emit(seg); err != nil {
			return err
		}
		first = false
	}
	return nil
}

// pseudoSum is the TCP pseudo-header sum (not complemented).
func pseudoSum(src, dst []byte, length uint16) uint16 {
	s := checksum.Checksum(src, 0)
	s = checksum.Checksum(dst, s)
	return checksum.Combine(s, checksum.Combine(uint16(header.TCPProtocolNumber), length))
}

// ipHeader validates the IP header of pkt and returns its length (IPv6: the
// fixed header only, extension headers are not supported for GSO) and the
// transport protocol.
func ipHeader(pkt []byte) (int, uint8, error) {
	if len(pkt) == 0 {
		return 0, 0, fmt.Errorf("%w: empty", ErrBadPacket)
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < header.IPv4MinimumSize {
			return 0, 0, fmt.Errorf("%w: truncated IPv4 header", ErrBadPacket)
		}
		ihl := int(pkt[0]&0xf) * 4
		if ihl < header.IPv4MinimumSize || ihl > len(pkt) {
			return 0, 0, fmt.Errorf("%w: bad IPv4 header length %d", ErrBadPacket, ihl)
		}
		if tl := int(binary.BigEndian.Uint16(pkt[2:])); tl != len(pkt) {
			return 0, 0, fmt.Errorf("%w: IPv4 total length %d, packet %d bytes", ErrBadPacket, tl, len(pkt))
		}
		return ihl, pkt[9], nil
	case 6:
		if len(pkt) < header.IPv6MinimumSize {
			return 0, 0, fmt.Errorf("%w: truncated IPv6 header", ErrBadPacket)
		}
		if pl := int(binary.BigEndian.Uint16(pkt[4:])); pl+header.IPv6MinimumSize != len(pkt) {
			return 0, 0, fmt.Errorf("%w: IPv6 payload length %d, packet %d bytes", ErrBadPacket, pl, len(pkt))
		}
		return header.IPv6MinimumSize, pkt[6], nil
	default:
		return 0, 0, fmt.Errorf("%w: IP version %d", ErrBadPacket, pkt[0]>>4)
	}
}
