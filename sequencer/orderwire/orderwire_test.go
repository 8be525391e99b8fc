package orderwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"
)

var sample = []Frame{
	{Type: Hello, Epoch: 7, GFloor: 1<<62 + 5},
	{Type: Open, Flow: Flow{ClientIP: [4]byte{10, 0, 0, 1}, ClientPort: 40000, NodePort: 6379}},
	{Type: Stamp, Flow: Flow{ClientIP: [4]byte{10, 0, 0, 1}, ClientPort: 40000, NodePort: 6379}, Start: 0, End: 1448, G: 1 << 40},
	{Type: Stamp, Flow: Flow{ClientIP: [4]byte{192, 168, 1, 2}, ClientPort: 1, NodePort: 65535}, Start: 1<<32 - 1, End: 1<<32 + 9, G: 1<<63 - 1},
	{Type: Close, Flow: Flow{ClientIP: [4]byte{10, 0, 0, 1}, ClientPort: 40000, NodePort: 6379}},
	{Type: Applied, G: 123456789},
	{Type: Catchup, Job: 3, G: 1 << 60, W: 1<<63 | 99, Source: [NameLen]byte{'s', 'y', 'd', 'n', 'e', 'y'}},
	{Type: Catchup, Job: 4, G: 5, W: 6, Source: [NameLen]byte{'d'}, Flags: CatchupVerify, Bound: 1<<60 + 7},
	{Type: Stop, Job: 3},
	{Type: Progress, Job: 3, State: JobRunning, Keys: 1000, Bytes: 1 << 20, Remaining: ^uint64(0), G: 1 << 60, W: 7},
	{Type: Progress, Job: 4, State: JobDone, G: 1, W: 2},
}

func TestRoundTrip(t *testing.T) {
	var stream []byte
	for i := range sample {
		var err error
		stream, err = Append(stream, &sample[i])
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, MaxFrame)
		n, err := Encode(b, &sample[i])
		if err != nil || n != sample[i].Len() {
			t.Fatalf("Encode %v: n=%d err=%v", sample[i].Type, n, err)
		}
		var got Frame
		m, err := Decode(b[:n], &got)
		if err != nil || m != n || got != sample[i] {
			t.Fatalf("Decode %v: got %+v n=%d err=%v", sample[i].Type, got, m, err)
		}
		// Every strict prefix is ErrShort, never a frame or another error.
		for k := 0; k < n; k++ {
			if _, err := Decode(b[:k], &got); !errors.Is(err, ErrShort) {
				t.Fatalf("prefix %d of %v: err=%v, want ErrShort", k, sample[i].Type, err)
			}
		}
	}
	// The same frames read back one byte at a time through a Reader.
	rd := NewReader(iotest.OneByteReader(bytes.NewReader(stream)))
	for i := range sample {
		var got Frame
		if err := rd.ReadFrame(&got); err != nil || got != sample[i] {
			t.Fatalf("ReadFrame %d: %+v %v", i, got, err)
		}
	}
	var f Frame
	if err := rd.ReadFrame(&f); err != io.EOF {
		t.Fatalf("end: %v, want io.EOF", err)
	}
}

func TestWireLayout(t *testing.T) {
	// STAMP is the frame of the hot path: 3 + 32 bytes, laid out as the
	// design says.
	b, err := Append(nil, &sample[2])
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{3, 0, 32, 10, 0, 0, 1, 0x9c, 0x40, 0x18, 0xeb}
	want = binary.BigEndian.AppendUint64(want, 0)
	want = binary.BigEndian.AppendUint64(want, 1448)
	want = binary.BigEndian.AppendUint64(want, 1<<40)
	if !bytes.Equal(b, want) {
		t.Fatalf("stamp encoding\n got %x\nwant %x", b, want)
	}
}

func TestRejects(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"unknown type", []byte{9, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0}, ErrUnknownType},
		{"type 0", []byte{0, 0, 0}, ErrUnknownType},
		{"body too long", []byte{byte(Applied), 0, 9}, ErrBodyLength},
		{"body huge", []byte{byte(Stamp), 0xff, 0xff}, ErrBodyLength},
		{"body too short", []byte{byte(Hello), 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}, ErrBodyLength},
	}
	for _, c := range cases {
		var f Frame
		if _, err := Decode(c.b, &f); !errors.Is(err, c.want) {
			t.Errorf("%s: err=%v, want %v", c.name, err, c.want)
		}
		rd := NewReader(bytes.NewReader(c.b))
		if err := rd.ReadFrame(&f); !errors.Is(err, c.want) {
			t.Errorf("%s via Reader: err=%v, want %v", c.name, err, c.want)
		}
		if err := rd.ReadFrame(&f); !errors.Is(err, c.want) {
			t.Errorf("%s: Reader did not keep its error: %v", c.name, err)
		}
	}
	empty := Frame{Type: Stamp, Start: 5, End: 5}
	if _, err := Append(nil, &empty); !errors.Is(err, ErrEmptyRange) {
		t.Errorf("empty stamp encoded: %v", err)
	}
	raw := []byte{byte(Stamp), 0, 32}
	raw = append(raw, make([]byte, 8)...)
	raw = binary.BigEndian.AppendUint64(raw, 10)
	raw = binary.BigEndian.AppendUint64(raw, 3)
	raw = binary.BigEndian.AppendUint64(raw, 1)
	var f Frame
	if _, err := Decode(raw, &f); !errors.Is(err, ErrEmptyRange) {
		t.Errorf("inverted stamp decoded: %v", err)
	}
	if _, err := Append(nil, &Frame{Type: 77}); !errors.Is(err, ErrUnknownType) {
		t.Errorf("unknown type encoded: %v", err)
	}
	if _, err := Encode(make([]byte, 10), &sample[2]); !errors.Is(err, ErrBufferSmall) {
		t.Errorf("short buffer: %v", err)
	}
	bad := Frame{Type: Catchup, Job: 1}
	if _, err := Append(nil, &bad); !errors.Is(err, ErrBadName) {
		t.Errorf("catch-up without a source encoded: %v", err)
	}
	if err := bad.SetSource("a\x00b"); err == nil {
		t.Error("SetSource accepted a NUL")
	}
	if err := bad.SetSource("01234567890123456"); err == nil {
		t.Error("SetSource accepted 17 bytes")
	}
	if err := bad.SetSource("dublin"); err != nil || bad.SourceName() != "dublin" {
		t.Errorf("SetSource dublin: %v %q", err, bad.SourceName())
	}
	raw = []byte{byte(Catchup), 0, 49}
	raw = append(raw, make([]byte, 24)...)
	raw = append(raw, 'a', 0, 'b')
	raw = append(raw, make([]byte, 13+9)...)
	if _, err := Decode(raw, &f); !errors.Is(err, ErrBadName) {
		t.Errorf("name with a NUL inside decoded: %v", err)
	}
	raw[3+24+1] = 'b' // "ab": a valid name
	raw[3+24+NameLen] = 2
	if _, err := Decode(raw, &f); !errors.Is(err, ErrBadFlags) {
		t.Errorf("unknown catch-up flags decoded: %v", err)
	}
	if _, err := Append(nil, &Frame{Type: Catchup, Source: [NameLen]byte{'a'}, Flags: 4}); !errors.Is(err, ErrBadFlags) {
		t.Errorf("unknown catch-up flags encoded: %v", err)
	}
	if _, err := Append(nil, &Frame{Type: Progress, State: 9}); !errors.Is(err, ErrBadState) {
		t.Errorf("progress with state 9 encoded: %v", err)
	}
	raw = []byte{byte(Progress), 0, 49}
	raw = append(raw, make([]byte, 49)...)
	if _, err := Decode(raw, &f); !errors.Is(err, ErrBadState) {
		t.Errorf("progress with state 0 decoded: %v", err)
	}
	rd := NewReader(bytes.NewReader([]byte{byte(Applied), 0, 8, 1}))
	if err := rd.ReadFrame(&f); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated stream: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestFlowOf(t *testing.T) {
	f, ok := FlowOf(netip.MustParseAddrPort("[::ffff:10.1.2.3]:5555"), 6379)
	if !ok || f != (Flow{ClientIP: [4]byte{10, 1, 2, 3}, ClientPort: 5555, NodePort: 6379}) {
		t.Fatalf("FlowOf v4-mapped: %+v %v", f, ok)
	}
	if _, ok := FlowOf(netip.MustParseAddrPort("[2001:db8::1]:1"), 1); ok {
		t.Fatal("FlowOf accepted IPv6")
	}
	if s := f.String(); s != "10.1.2.3:5555->:6379" {
		t.Fatalf("String: %q", s)
	}
}

func TestNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 64*MaxFrame)
	var f Frame
	allocs := testing.AllocsPerRun(100, func() {
		b := buf[:0]
		for i := range sample {
			b, _ = Append(b, &sample[i])
		}
		for len(b) > 0 {
			n, err := Decode(b, &f)
			if err != nil {
				panic(err)
			}
			b = b[n:]
		}
	})
	if allocs != 0 {
		t.Fatalf("encode+decode allocated %.1f times per run", allocs)
	}
	stream, _ := Append(nil, &sample[2])
	r := bytes.NewReader(stream)
	rd := NewReader(r)
	allocs = testing.AllocsPerRun(100, func() {
		r.Reset(stream)
		rd.done = nil
		if err := rd.ReadFrame(&f); err != nil {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ReadFrame allocated %.1f times per frame", allocs)
	}
}

// FuzzDecode: any input decodes to an error or to a valid frame whose
// re-encoding is exactly the bytes consumed; never a panic. A Reader over
// the same bytes returns the same frames.
func FuzzDecode(f *testing.F) {
	for i := range sample {
		b, _ := Append(nil, &sample[i])
		f.Add(b)
	}
	f.Add([]byte{3, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var frames []Frame
		rest := b
		for {
			var fr Frame
			n, err := Decode(rest, &fr)
			if err != nil {
				break
			}
			if n < HeaderLen || n > MaxFrame || n > len(rest) {
				t.Fatalf("decode consumed %d of %d", n, len(rest))
			}
			if fr.Type == Stamp && fr.Start >= fr.End {
				t.Fatalf("decoded empty stamp %+v", fr)
			}
			re, err := Append(nil, &fr)
			if err != nil || !bytes.Equal(re, rest[:n]) {
				t.Fatalf("re-encode of %+v = %x (%v), consumed %x", fr, re, err, rest[:n])
			}
			frames = append(frames, fr)
			rest = rest[n:]
		}
		rd := NewReader(bytes.NewReader(b))
		for i := range frames {
			var fr Frame
			if err := rd.ReadFrame(&fr); err != nil || fr != frames[i] {
				t.Fatalf("reader frame %d: %+v %v, want %+v", i, fr, err, frames[i])
			}
		}
		var fr Frame
		if err := rd.ReadFrame(&fr); err == nil {
			t.Fatalf("reader returned extra frame %+v", fr)
		}
	})
}

// FuzzRoundTrip: decode(encode(x)) == x for every valid frame.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(3), []byte{1, 2, 3, 4}, uint16(1), uint16(2), uint64(1), uint64(2), uint64(3), uint64(4), uint64(5))
	f.Fuzz(func(t *testing.T, typ uint8, ip []byte, cp, np uint16, epoch, floor, start, end, g uint64) {
		fr := Frame{Type: Type(typ)}
		switch fr.Type {
		case Hello:
			fr.Epoch, fr.GFloor = epoch, floor
		case Open, Close:
			copy(fr.Flow.ClientIP[:], ip)
			fr.Flow.ClientPort, fr.Flow.NodePort = cp, np
		case Stamp:
			copy(fr.Flow.ClientIP[:], ip)
			fr.Flow.ClientPort, fr.Flow.NodePort = cp, np
			fr.Start, fr.End, fr.G = start, end, g
		case Applied:
			fr.G = g
		case Stop:
			fr.Job = g
		case Catchup:
			fr.Job, fr.G, fr.W = epoch, g, start
			copy(fr.Source[:], ip)
			fr.Flags, fr.Bound = uint8(cp), end
		case Progress:
			fr.Job, fr.State, fr.Keys, fr.Bytes, fr.Remaining, fr.G, fr.W = epoch, uint8(cp), floor, start, end, g, uint64(np)
		}
		b, err := Append(nil, &fr)
		if err != nil {
			invalid := fr.Type == Stamp && start >= end ||
				fr.Type == Catchup && (!validName(fr.Source[:]) || fr.Flags&^CatchupVerify != 0) ||
				fr.Type == Progress && (fr.State < JobRunning || fr.State > JobFailed)
			if _, known := BodyLen(fr.Type); known && !invalid {
				t.Fatalf("valid frame refused: %+v: %v", fr, err)
			}
			return
		}
		var got Frame
		n, err := Decode(b, &got)
		if err != nil || n != len(b) || got != fr {
			t.Fatalf("round trip %+v -> %x -> %+v (n=%d, %v)", fr, b, got, n, err)
		}
	})
}
