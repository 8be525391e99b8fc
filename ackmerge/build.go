package ackmerge

import (
	"net/netip"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// build writes a TCP packet the flow makes itself (SYN-ACK, RST, pure ACK)
// into a buffer from out.Alloc, with full checksums and a zero virtio-net
// header, and emits it. opts must be a multiple of 4 bytes long.
func (f *Flow) build(out *Out, to int, src, dst netip.AddrPort, seq, ack uint32, flags uint8, wnd uint16, opts []byte) {
	f.buildData(out, to, src, dst, seq, ack, flags, wnd, opts, nil)
}

// buildData is build with a payload (held reply bytes, hold.go).
func (f *Flow) buildData(out *Out, to int, src, dst netip.AddrPort, seq, ack uint32, flags uint8, wnd uint16, opts, payload []byte) {
	fields := packet.Fields{Src: src, Dst: dst, Seq: seq, Ack: ack, Flags: flags, Window: wnd, Options: opts, Payload: payload}
	n := out.Offset + fields.Len()
	var buf []byte
	if out.Alloc != nil {
		buf = out.Alloc(n)
	}
	if len(buf) < n {
		f.stats.AllocFail++
		return
	}
	buf = buf[:n]
	var p packet.TCP
	if p.Build(buf[out.Offset:], virtio.At(buf, out.Offset), &fields) != nil {
		f.stats.Invalid++
		return
	}
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
