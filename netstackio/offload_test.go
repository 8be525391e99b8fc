package netstackio

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/sdnkvs/sdnkvs/netstackio/packet/packettest"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestCompleteChecksumMatchesFullRecomputation(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		v6 := i%2 == 1
		plen := r.IntN(1500)
		opt := 4 * r.IntN(11)
		h, pkt := packettest.TCPPacket(r, v6, plen, opt, true, 0)
		if packettest.TCPChecksumOK(pkt) && plen > 0 {
			// A partial sum is almost never a valid checksum; make sure the
			// test is not vacuous.
			continue
		}
		if err := CompleteChecksum(h, pkt); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !packettest.TCPChecksumOK(pkt) {
			t.Fatalf("packet %d (v6=%v len=%d opt=%d): checksum invalid after CompleteChecksum", i, v6, plen, opt)
		}
		if h.NeedsCsum() {
			t.Fatalf("NEEDS_CSUM still set")
		}
	}
}

func TestSoftwareGSOSegments(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	scratch := make([]byte, 1500)
	for i := 0; i < 300; i++ {
		v6 := i%2 == 1
		mss := 500 + r.IntN(900)
		plen := r.IntN(60000)
		opt := 4 * r.IntN(4)
		h, pkt := packettest.TCPPacket(r, v6, plen, opt, i%3 != 0, mss)
		orig := append([]byte(nil), pkt...)
		ipLen := header.IPv4MinimumSize
		if v6 {
			ipLen = header.IPv6MinimumSize
		}
		hdrLen := ipLen + header.TCPMinimumSize + opt
		seq0 := header.TCP(pkt[ipLen:]).SequenceNumber()
		var got []byte
		nseg := 0
		err := SoftwareOffload(h, pkt, scratch, func(seg []byte) error {
			if !packettest.TCPChecksumOK(seg) {
				t.Fatalf("packet %d segment %d: bad checksum", i, nseg)
			}
			if len(seg)-hdrLen > mss {
				t.Fatalf("segment payload %d > mss %d", len(seg)-hdrLen, mss)
			}
			tcp := header.TCP(seg[ipLen:])
			if want := seq0 + uint32(len(got)); tcp.SequenceNumber() != want {
				t.Fatalf("segment %d seq %d, want %d", nseg, tcp.SequenceNumber(), want)
			}
			last := len(got)+len(seg)-hdrLen == plen
			if f := tcp.Flags(); f.Contains(header.TCPFlagFin) != last || f.Contains(header.TCPFlagPsh) != last {
				t.Fatalf("segment %d (last=%v): flags %v", nseg, last, f)
			}
			if f := tcp.Flags(); f.Contains(header.TCPFlagCwr) != (nseg == 0) {
				t.Fatalf("segment %d: CWR %v", nseg, f)
			}
			if !v6 && header.IPv4(seg).ID() != header.IPv4(pkt).ID()+uint16(nseg) {
				t.Fatalf("segment %d: IP ID not incremented", nseg)
			}
			got = append(got, seg[hdrLen:]...)
			nseg++
			return nil
		})
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(got, orig[hdrLen:]) {
			t.Fatalf("packet %d: reassembled payload differs", i)
		}
		if want := max(1, (plen+mss-1)/mss); nseg != want {
			t.Fatalf("packet %d: %d segments, want %d", i, nseg, want)
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatalf("packet %d: SoftwareOffload modified its input", i)
		}
	}
}

func TestSoftwareOffloadRejectsBadInput(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	scratch := make([]byte, 1500)
	emit := func([]byte) error { return nil }
	h, pkt := packettest.TCPPacket(r, false, 3000, 0, true, 1000)

	bad := virtio.Hdr(append([]byte(nil), h...))
	bad.SetGSOSize(0)
	if err := SoftwareOffload(bad, pkt, scratch, emit); !errors.Is(err, ErrBadVnetHdr) {
		t.Errorf("gso_size 0: err %v", err)
	}
	bad = virtio.Hdr(append([]byte(nil), h...))
	bad.SetGSOType(virtio.GSOTCPv6)
	if err := SoftwareOffload(bad, pkt, scratch, emit); !errors.Is(err, ErrBadVnetHdr) {
		t.Errorf("v6 GSO on v4: err %v", err)
	}
	bad = virtio.Hdr(append([]byte(nil), h...))
	bad.SetGSOSize(1490)
	if err := SoftwareOffload(bad, pkt, scratch, emit); !errors.Is(err, ErrSegTooLarge) {
		t.Errorf("segment larger than scratch: err %v", err)
	}
	if err := SoftwareOffload(h, pkt[:100], scratch, emit); !errors.Is(err, ErrBadPacket) {
		t.Errorf("truncated: err %v", err)
	}
	csum := virtio.Hdr(make([]byte, virtio.HdrLen))
	csum.SetFlags(virtio.FlagNeedsCsum)
	csum.SetCsumStart(60)
	csum.SetCsumOffset(16)
	if err := CompleteChecksum(csum, make([]byte, 70)); !errors.Is(err, ErrBadVnetHdr) {
		t.Errorf("csum beyond packet: err %v", err)
	}
	// Random garbage never panics.
	for i := 0; i < 20000; i++ {
		g := make([]byte, r.IntN(200))
		for j := range g {
			g[j] = byte(r.Uint32())
		}
		gh := virtio.Hdr(make([]byte, virtio.HdrLen))
		for j := range gh {
			gh[j] = byte(r.Uint32())
		}
		if r.IntN(2) == 0 && len(g) > 0 {
			g[0] = 0x45
		}
		_ = SoftwareOffload(gh, g, scratch, emit)
	}
}

func TestSoftwareOffloadAllocatesNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	h, pkt := packettest.TCPPacket(r, false, 20000, 12, true, 1448)
	scratch := make([]byte, 1500)
	n := 0
	emit := func(seg []byte) error { n += len(seg); return nil }
	if a := testing.AllocsPerRun(100, func() {
		if err := SoftwareOffload(h, pkt, scratch, emit); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("SoftwareOffload allocates %v per packet", a)
	}
}
