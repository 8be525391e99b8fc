package ackmerge

import (
	"encoding/binary"
	"net/netip"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// build writes a TCP packet the flow makes itself (SYN-ACK, RST, pure ACK)
// into a buffer from out.Alloc, with full checksums and a zero virtio-net
// header, and emits it. opts must be a multiple of 4 bytes long.
func (f *Flow) build(out *Out, to int, src, dst netip.AddrPort, seq, ack uint32, flags uint8, wnd uint16, opts []byte) {
	v6 := src.Addr().Is6()
	ipl := 20
	if v6 {
		ipl = 40
	}
	tl := 20 + len(opts)
	n := out.Offset + ipl + tl
	var buf []byte
	if out.Alloc != nil {
		buf = out.Alloc(n)
	}
	if len(buf) < n {
		f.stats.AllocFail++
		return
	}
	buf = buf[:n]
	vnet := virtio.Hdr(buf[out.Offset-virtio.HdrLen : out.Offset])
	vnet.Clear()
	b := buf[out.Offset:]
	clear(b)
	if v6 {
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], uint16(tl))
		b[6] = packet.ProtoTCP
		b[7] = 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(b[8:24], s[:])
		copy(b[24:40], d[:])
	} else {
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(ipl+tl))
		binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
		b[8] = 64
		b[9] = packet.ProtoTCP
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(b[12:16], s[:])
		copy(b[16:20], d[:])
	}
	t := b[ipl:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte(tl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], wnd)
	copy(t[20:], opts)
	var p packet.TCP
	if p.Parse(b, vnet) != nil {
		f.stats.Invalid++
		return
	}
	p.ComputeIPChecksum()
	p.ComputeTCPChecksum()
	out.Pkts = append(out.Pkts, Emit{To: to, Buf: buf})
	if to == ToClient {
		f.stats.ToClient++
	} else {
		f.stats.ToBranches++
	}
}

// sendRST emits a RST from src to dst with the given sequence number (and
// ack, with the ACK flag, if withAck).
func (f *Flow) sendRST(out *Out, to int, src, dst netip.AddrPort, seq, ack uint32, withAck bool) {
	fl := uint8(packet.FlagRST)
	if !withAck {
		ack = 0
	} else {
		fl |= packet.FlagACK
	}
	f.build(out, to, src, dst, seq, ack, fl, 0, nil)
}
