// Package packettest builds test packets with gVisor's header encoders,
// independently of netstackio/packet, so tests can check the middlebox's
// rewrites against a reference. It is test support: nothing in the
// production binary imports it.
package packettest

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TCPPacket builds an IPv4 or IPv6 TCP packet with a complete checksum
// (partial=false) or with the pseudo-header sum only (partial=true, as an
// offload device delivers it), and the virtio-net header that goes with
// it. gso > 0 marks it as a TCP GSO packet with that segment size.
func TCPPacket(r *rand.Rand, v6 bool, payloadLen, optLen int, partial bool, gso int) (virtio.Hdr, []byte) {
	ipLen := header.IPv4MinimumSize
	if v6 {
		ipLen = header.IPv6MinimumSize
	}
	tcpLen := header.TCPMinimumSize + optLen
	pkt := make([]byte, ipLen+tcpLen+payloadLen)
	for i := ipLen + header.TCPMinimumSize; i < len(pkt); i++ {
		pkt[i] = byte(r.Uint32())
	}
	var src, dst tcpip.Address
	if v6 {
		var s, d [16]byte
		binary.BigEndian.PutUint64(s[:], r.Uint64())
		binary.BigEndian.PutUint64(d[8:], r.Uint64())
		src, dst = tcpip.AddrFrom16(s), tcpip.AddrFrom16(d)
		header.IPv6(pkt).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen + payloadLen),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           src,
			DstAddr:           dst,
		})
	} else {
		var s, d [4]byte
		binary.BigEndian.PutUint32(s[:], r.Uint32())
		binary.BigEndian.PutUint32(d[:], r.Uint32())
		src, dst = tcpip.AddrFrom4(s), tcpip.AddrFrom4(d)
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)),
			ID:          uint16(r.Uint32()),
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     src,
			DstAddr:     dst,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	tcp := header.TCP(pkt[ipLen:])
	tcp.Encode(&header.TCPFields{
		SrcPort:    uint16(r.Uint32()),
		DstPort:    uint16(r.Uint32()),
		SeqNum:     r.Uint32(),
		AckNum:     r.Uint32(),
		DataOffset: uint8(tcpLen),
		Flags:      header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin | header.TCPFlagCwr,
		WindowSize: uint16(r.Uint32()),
	})
	for i := 0; i < optLen; i++ {
		tcp[header.TCPMinimumSize+i] = header.TCPOptionNOP
	}
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+payloadLen))
	h := virtio.Hdr(make([]byte, virtio.HdrLen))
	if partial {
		tcp.SetChecksum(pseudo)
		h.SetFlags(virtio.FlagNeedsCsum)
		h.SetCsumStart(uint16(ipLen))
		h.SetCsumOffset(header.TCPChecksumOffset)
	} else {
		tcp.SetChecksum(^checksum.Checksum(tcp, pseudo))
	}
	if gso > 0 {
		h.SetHdrLen(uint16(ipLen + tcpLen))
		h.SetGSOSize(uint16(gso))
		if v6 {
			h.SetGSOType(virtio.GSOTCPv6)
		} else {
			h.SetGSOType(virtio.GSOTCPv4)
		}
	}
	return h, pkt
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
