package ackmerge

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/packet/packettest"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The test harness builds packets with gVisor's header package and checks
// every emitted packet with it, independently of netstackio/packet.

const testOff = 16 // buffer offset of IP packets (>= virtio.HdrLen, with headroom)

var (
	cliAddr = netip.MustParseAddrPort("10.0.0.1:40000")
	vipAddr = netip.MustParseAddrPort("10.200.100.1:6379")
)

func nodeAddr(k int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 210, byte(k + 1), 11}), 6379)
}

// seg is a TCP segment in plain fields.
type seg struct {
	To       int // destination index of an emitted packet
	InPlace  bool
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    uint8
	Wnd      uint16
	Opts     []byte
	Data     []byte
	Partial  bool   // NEEDS_CSUM: the field holds the pseudo-header sum
	GSO      uint16 // gso_size (0: none)
}

func (s seg) String() string {
	return fmt.Sprintf("to=%d %v->%v seq=%d ack=%d fl=%#x wnd=%d len=%d", s.To, s.Src, s.Dst, s.Seq, s.Ack, s.Flags, s.Wnd, len(s.Data))
}

// mkPacket lays s out at testOff in a fresh buffer with gVisor's encoders
// and a complete (or, if s.Partial, pseudo-header) checksum.
func mkPacket(s seg) []byte {
	return packettest.Build(packettest.Spec{Src: s.Src, Dst: s.Dst, Seq: s.Seq, Ack: s.Ack, Flags: s.Flags, Window: s.Wnd,
		Options: s.Opts, Payload: s.Data, Partial: s.Partial, GSO: s.GSO}, testOff)
}

// decode reads an emitted packet back with gVisor's views, failing t on a
// bad checksum in either mode (partial packets are completed the way the
// kernel would and then checked).
func decode(t testing.TB, e Emit, off int) seg {
	t.Helper()
	if len(e.Buf) < off+20 {
		t.Fatalf("emitted buffer too short: %d", len(e.Buf))
	}
	vnet := virtio.Hdr(e.Buf[off-virtio.HdrLen : off])
	b := e.Buf[off:]
	var s seg
	s.To, s.InPlace = e.To, e.InPlace
	var src, dst tcpip.Address
	var tb header.TCP
	switch b[0] >> 4 {
	case 4:
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || int(ip.TotalLength()) != len(b) {
			t.Fatalf("bad IPv4 header/length: total %d, buffer %d", ip.TotalLength(), len(b))
		}
		if ip.CalculateChecksum() != 0xffff {
			t.Fatalf("bad IPv4 header checksum in %x", []byte(b[:20]))
		}
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
		tb = header.TCP(ip.Payload())
		s.Src = netip.AddrPortFrom(netip.AddrFrom4(src.As4()), tb.SourcePort())
		s.Dst = netip.AddrPortFrom(netip.AddrFrom4(dst.As4()), tb.DestinationPort())
	case 6:
		ip := header.IPv6(b)
		if int(ip.PayloadLength())+40 != len(b) {
			t.Fatalf("bad IPv6 length")
		}
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
		tb = header.TCP(ip.Payload())
		s.Src = netip.AddrPortFrom(netip.AddrFrom16(src.As16()), tb.SourcePort())
		s.Dst = netip.AddrPortFrom(netip.AddrFrom16(dst.As16()), tb.DestinationPort())
	default:
		t.Fatalf("not IP: %x", b[0])
	}
	tl := len(tb)
	if vnet.NeedsCsum() {
		s.Partial = true
		s.GSO = vnet.GSOSize()
		pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tl))
		if !sameSum(tb.Checksum(), pseudo) {
			t.Fatalf("partial checksum field %#x != pseudo-header sum %#x: %v", tb.Checksum(), pseudo, s)
		}
		// Complete it like the kernel and check the result.
		c := append(header.TCP(nil), tb...)
		binary.BigEndian.PutUint16(c[16:], ^checksum.Checksum(c, 0))
		if !c.IsChecksumValid(src, dst, checksum.Checksum(c.Payload(), 0), uint16(len(c.Payload()))) {
			t.Fatalf("completed partial checksum invalid")
		}
	} else if !tb.IsChecksumValid(src, dst, checksum.Checksum(tb.Payload(), 0), uint16(len(tb.Payload()))) {
		t.Fatalf("bad TCP checksum: %v", s)
	}
	s.Seq, s.Ack, s.Flags, s.Wnd = tb.SequenceNumber(), tb.AckNumber(), uint8(tb.Flags()), tb.WindowSize()
	s.Opts = append([]byte(nil), tb.Options()...)
	s.Data = append([]byte(nil), tb.Payload()...)
	return s
}

func sameSum(a, b uint16) bool {
	if a == 0xffff {
		a = 0
	}
	if b == 0xffff {
		b = 0
	}
	return a == b
}

// harness drives one Flow with a virtual clock.
type harness struct {
	t      testing.TB
	f      *Flow
	now    time.Time
	out    Out
	n      int
	iss    []uint32 // branch ISS
	cliISS uint32
	events []Event
}

func newHarness(t testing.TB, n int, cfg Config) *harness {
	t.Helper()
	ts := make([]Target, n)
	for k := range ts {
		ts[k] = Target{Addr: nodeAddr(k), DC: k}
	}
	f, err := NewFlow(cfg, cliAddr, vipAddr, ts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f, n: n, now: time.Unix(1000, 0), cliISS: 0xfffff000}
	h.out.Offset = testOff
	h.out.Alloc = func(n int) []byte { return make([]byte, n) }
	for k := 0; k < n; k++ {
		// Spread ISSs around the space, one close to wrapping.
		h.iss = append(h.iss, 0xffffff00+uint32(k)*0x3000_0000)
	}
	return h
}

// step feeds s to the flow from 'from' and returns the decoded output.
func (h *harness) step(from int, s seg) []seg {
	h.t.Helper()
	buf := mkPacket(s)
	var p packet.TCP
	if err := p.Parse(buf[testOff:], virtio.Hdr(buf[testOff-virtio.HdrLen:testOff])); err != nil {
		h.t.Fatal(err)
	}
	h.out.Reset()
	h.f.Step(buf, &p, from, h.now, &h.out)
	return h.collect()
}

func (h *harness) tick(d time.Duration) []seg {
	h.t.Helper()
	h.now = h.now.Add(d)
	h.out.Reset()
	h.f.Tick(h.now, &h.out)
	return h.collect()
}

func (h *harness) remove(k int) []seg {
	h.t.Helper()
	h.out.Reset()
	h.f.RemoveBranch(k, CauseFailover, h.now, &h.out)
	return h.collect()
}

func (h *harness) collect() []seg {
	h.t.Helper()
	var r []seg
	for _, e := range h.out.Pkts {
		s := decode(h.t, e, testOff)
		// Consistent addressing.
		if e.To == ToClient {
			if s.Src != vipAddr || s.Dst != cliAddr {
				h.t.Fatalf("packet to client has addresses %v -> %v", s.Src, s.Dst)
			}
		} else if s.Src != cliAddr || s.Dst != nodeAddr(e.To) {
			h.t.Fatalf("packet to branch %d has addresses %v -> %v", e.To, s.Src, s.Dst)
		}
		r = append(r, s)
	}
	h.events = append(h.events, h.out.Events...)
	return r
}

// --- segment makers in relative numbers ------------------------------------

var synOpts = []byte{
	packet.OptMSS, 4, 0x05, 0xb4, // 1460
	packet.OptSACKPermitted, 2,
	packet.OptTimestamps, 10, 0, 0, 0, 1, 0, 0, 0, 0,
	packet.OptNOP, packet.OptWindowScale, 3, 7,
}

func (h *harness) clientSYN() []seg {
	return h.step(ToClient, seg{Src: cliAddr, Dst: vipAddr, Seq: h.cliISS, Flags: packet.FlagSYN, Wnd: 64240, Opts: synOpts})
}

func synAckOpts(mss uint16, ws int) []byte {
	o := []byte{packet.OptMSS, 4, byte(mss >> 8), byte(mss)}
	if ws >= 0 {
		o = append(o, packet.OptNOP, packet.OptWindowScale, 3, byte(ws))
	}
	return o
}

func (h *harness) branchSynAck(k int, mss uint16, ws int, wnd uint16) []seg {
	return h.step(k, seg{Src: nodeAddr(k), Dst: cliAddr, Seq: h.iss[k], Ack: h.cliISS + 1,
		Flags: packet.FlagSYN | packet.FlagACK, Wnd: wnd, Opts: synAckOpts(mss, ws)})
}

// open runs the handshake with every branch answering (MSS 1460-10k, ws 7,
// window 65535) and the client's final ACK; it returns the client SYN-ACK.
func (h *harness) open() seg {
	h.t.Helper()
	h.clientSYN()
	var sa []seg
	for k := 0; k < h.n; k++ {
		sa = h.branchSynAck(k, uint16(1460-10*k), 7, 65535)
	}
	if len(sa) != 1 || sa[0].To != ToClient {
		h.t.Fatalf("expected one SYN-ACK to the client, got %v", sa)
	}
	h.send(0, nil, 0, 502)
	return sa[0]
}

// send: client segment at relative seq rs (bytes after its SYN) acking
// relative ra (reply bytes) with data and flags (ACK always set).
func (h *harness) sendFl(rs uint32, data []byte, ra uint32, wnd uint16, fl uint8) []seg {
	return h.step(ToClient, seg{Src: cliAddr, Dst: vipAddr, Seq: h.cliISS + 1 + rs, Ack: h.ref() + 1 + ra,
		Flags: packet.FlagACK | fl, Wnd: wnd, Data: data})
}

func (h *harness) send(rs uint32, data []byte, ra uint32, wnd uint16) []seg {
	return h.sendFl(rs, data, ra, wnd, 0)
}

// reply: branch k segment at relative seq rs in its own stream, acking
// relative ra of the client stream, window wnd (scaled by 7).
func (h *harness) replyFl(k int, rs uint32, data []byte, ra uint32, wnd uint16, fl uint8) []seg {
	return h.step(k, seg{Src: nodeAddr(k), Dst: cliAddr, Seq: h.iss[k] + 1 + rs, Ack: h.cliISS + 1 + ra,
		Flags: packet.FlagACK | fl, Wnd: wnd, Data: data})
}

func (h *harness) reply(k int, rs uint32, data []byte, ra uint32, wnd uint16) []seg {
	return h.replyFl(k, rs, data, ra, wnd, 0)
}

func (h *harness) ack(k int, ra uint32, wnd uint16) []seg { return h.reply(k, 0, nil, ra, wnd) }

// ref is the reference ISS (the first branch that answered: 0 in open).
func (h *harness) ref() uint32 {
	if h.f.haveRef {
		return uint32(h.f.issRef)
	}
	return h.iss[0]
}

// rel converts what the client sees to relative numbers.
func (h *harness) relSeq(s seg) uint32 { return s.Seq - h.ref() - 1 }
func (h *harness) relAck(s seg) uint32 { return s.Ack - h.cliISS - 1 }

func only(t testing.TB, segs []seg, to int) seg {
	t.Helper()
	if len(segs) != 1 || segs[0].To != to {
		t.Fatalf("expected exactly one packet to %d, got %d: %v", to, len(segs), segs)
	}
	return segs[0]
}

func none(t testing.TB, segs []seg) {
	t.Helper()
	if len(segs) != 0 {
		t.Fatalf("expected nothing emitted, got %v", segs)
	}
}

func (h *harness) hasEvent(kind EventKind, branch int, cause Cause) bool {
	for _, e := range h.events {
		if e.Kind == kind && (branch < 0 || e.Branch == branch) && (cause == CauseNone || e.Cause == cause) {
			return true
		}
	}
	return false
}

func hasOpt(opts []byte, kind byte) bool {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case packet.OptEnd:
			return false
		case packet.OptNOP:
			i++
			continue
		}
		if opts[i] == kind {
			return true
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return false
		}
		i += int(opts[i+1])
	}
	return false
}
