//go:build linux

package testbed

import (
	"errors"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestShaperPacingDelayAndDropTail(t *testing.T) {
	const ms = int64(time.Millisecond)
	// 8 Mbit/s: a 1000-byte packet takes 1 ms to serialise.
	s := shaper{rate: 8e6, delay: 10 * ms, limit: 3000}
	rel, ok := s.admit(1000, 0)
	if !ok || rel != 11*ms {
		t.Fatalf("first packet: release %d ok %v, want 11ms", rel, ok)
	}
	// Back-to-back packets queue behind each other.
	rel, _ = s.admit(1000, 0)
	if rel != 12*ms {
		t.Fatalf("second packet release %d, want 12ms", rel)
	}
	rel, _ = s.admit(1000, 0)
	if rel != 13*ms {
		t.Fatalf("third packet release %d, want 13ms", rel)
	}
	// Backlog is now 3 ms = 3000 bytes: the next one exceeds the limit.
	if _, ok := s.admit(1, 0); ok {
		t.Fatal("packet beyond the drop-tail limit admitted")
	}
	// A dropped packet does not consume link time; once the backlog drains
	// a packet goes out at once.
	rel, ok = s.admit(500, 20*ms)
	if !ok || rel != 20*ms+ms/2+10*ms {
		t.Fatalf("after idle: release %d ok %v", rel, ok)
	}
	// Unlimited rate: pure delay.
	u := shaper{delay: 5 * ms}
	if rel, ok := u.admit(1500, 7); !ok || rel != 5*ms+7 {
		t.Fatalf("unlimited: %d %v", rel, ok)
	}
}

func TestShaperAllocatesNothing(t *testing.T) {
	s := shaper{rate: 1e8, delay: 1e6, limit: 1 << 20}
	now := int64(0)
	if a := testing.AllocsPerRun(1000, func() { now += 1000; s.admit(1500, now) }); a != 0 {
		t.Fatalf("admit allocates %v per packet", a)
	}
}

// chanReader hands out one packet per Read; Close makes Read fail.
type chanReader struct {
	ch     chan []byte
	closed chan struct{}
	once   sync.Once
}

func newChanReader() *chanReader {
	return &chanReader{ch: make(chan []byte, 4096), closed: make(chan struct{})}
}

func (r *chanReader) Read(b []byte) (int, error) {
	select {
	case p := <-r.ch:
		return copy(b, p), nil
	case <-r.closed:
		return 0, io.EOF
	}
}
func (r *chanReader) Close() { r.once.Do(func() { close(r.closed) }) }

// recWriter records each packet's first byte and arrival time.
type recWriter struct {
	mu   sync.Mutex
	tags []byte
	at   []time.Time
}

func (w *recWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.tags = append(w.tags, b[0])
	w.at = append(w.at, time.Now())
	w.mu.Unlock()
	return len(b), nil
}

func (w *recWriter) count() int { w.mu.Lock(); defer w.mu.Unlock(); return len(w.tags) }

func runLine(t *testing.T, cfg LineConfig, cut *atomic.Bool) (*chanReader, *recWriter, *DelayLine) {
	r, w := newChanReader(), &recWriter{}
	l := NewDelayLine(r, w, cfg, cut)
	t.Cleanup(func() { l.Close(); r.Close(); l.Wait() })
	return r, w, l
}

func TestDelayLineDelaysInOrder(t *testing.T) {
	const delay = 20 * time.Millisecond
	r, w, l := runLine(t, LineConfig{Delay: delay}, nil)
	start := time.Now()
	for i := range 50 {
		r.ch <- []byte{byte(i), 0, 0, 0}
	}
	testenv.WaitFor(t, 5*time.Second, "50 packets delivered", func() bool { return w.count() == 50 })
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, tag := range w.tags {
		if tag != byte(i) {
			t.Fatalf("packet %d delivered as %d: order broken", i, tag)
		}
	}
	if first := w.at[0].Sub(start); first < delay {
		t.Fatalf("first packet after %v, want >= %v", first, delay)
	}
	if st := l.Stats(); st.Packets != 50 || st.Bytes != 200 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDelayLineLossAndQueueDrops(t *testing.T) {
	// Loss: about half the packets vanish, counted.
	r, w, l := runLine(t, LineConfig{Loss: 0.5}, nil)
	for i := range 2000 {
		r.ch <- []byte{byte(i)}
	}
	testenv.WaitFor(t, 5*time.Second, "all packets accounted", func() bool {
		st := l.Stats()
		return st.Packets+st.DropLoss == 2000
	})
	if n := w.count(); n < 800 || n > 1200 {
		t.Fatalf("loss 0.5 delivered %d of 2000", n)
	}

	// Drop-tail: 8 kbit/s and a 3000-byte queue hold only a few of a burst
	// of 1000-byte packets.
	r2, _, l2 := runLine(t, LineConfig{Rate: 8000, QueueBytes: 3000}, nil)
	big := make([]byte, 1000)
	for range 20 {
		r2.ch <- big
	}
	testenv.WaitFor(t, 5*time.Second, "burst read", func() bool { return l2.Stats().DropQueue >= 17 })
	if st := l2.Stats(); st.DropQueue != 17 {
		t.Fatalf("queue drops %d, want 17 (3 fit in 3000 bytes)", st.DropQueue)
	}
}

func TestDelayLineCut(t *testing.T) {
	var cut atomic.Bool
	r, w, l := runLine(t, LineConfig{Delay: time.Millisecond}, &cut)
	cut.Store(true)
	for range 10 {
		r.ch <- []byte{1}
	}
	testenv.WaitFor(t, 5*time.Second, "cut drops", func() bool { return l.Stats().DropCut == 10 })
	if w.count() != 0 {
		t.Fatal("packets crossed a cut link")
	}
	cut.Store(false)
	r.ch <- []byte{2}
	testenv.WaitFor(t, 5*time.Second, "delivery after heal", func() bool { return w.count() == 1 })
}

// errWriter fails every write.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("refused") }

func TestDelayLineCountsWriteErrors(t *testing.T) {
	r := newChanReader()
	l := NewDelayLine(r, errWriter{}, LineConfig{}, nil)
	defer func() { l.Close(); r.Close(); l.Wait() }()
	r.ch <- []byte{1}
	testenv.WaitFor(t, 5*time.Second, "write error counted", func() bool { return l.Stats().WriteErrs == 1 })
}

func TestParse(t *testing.T) {
	for in, want := range map[string]uint64{"100mbit": 100e6, "1Gbit": 1e9, "2.5mbit/s": 2.5e6, "800": 800, "": 0, "500kbit": 5e5} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"10mbps", "fast", "-1mbit"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
	if v, err := ParseLoss("1%"); err != nil || v != 0.01 {
		t.Errorf("ParseLoss(1%%) = %v %v", v, err)
	}
	if _, err := ParseLoss("1.5"); err == nil {
		t.Error("loss 1.5 accepted")
	}
	cfg, err := Spec{DCs: "sydney,dublin", Nodes: 9, Delay: "sydney=5ms,dublin=170ms", Rate: "100mbit", Loss: "dublin=0.1%"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	s, d := cfg.DCs[0], cfg.DCs[1]
	if s.Name != "sydney" || s.Delay != 5*time.Millisecond || d.Delay != 170*time.Millisecond ||
		s.Rate != 100e6 || d.Rate != 100e6 || s.Loss != 0 || d.Loss != 0.001 || s.Nodes != 9 || s.QueueBytes == 0 {
		t.Fatalf("config %+v", cfg)
	}
	for spec, flag := range map[Spec]string{
		{DCs: ""}:                    "--dc",
		{DCs: "a", Delay: "b=5ms"}:   "--delay",
		{DCs: "a", Rate: "fast"}:     "--rate",
		{DCs: "a", Loss: "2"}:        "--loss",
		{DCs: "a", Delay: "a=5ms,a"}: "--delay",
	} {
		if _, err := spec.Config(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("Spec %+v: err %v, want one naming %s", spec, err, flag)
		}
	}
	for _, c := range []Config{
		{DCs: []DC{{Name: "Sydney"}}},
		{DCs: []DC{{Name: "gw"}}},
		{DCs: []DC{{Name: "a"}, {Name: "a"}}},
		{DCs: []DC{{Name: "a", Nodes: 500}}},
		{DCs: []DC{{Name: "a", Loss: 1}}},
		{DCs: []DC{{Name: "a", TCPBuffers: 100}}},
		{Name: "bad name", DCs: []DC{{Name: "a"}}},
		{},
	} {
		if _, err := c.WithDefaults(); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}

func TestParseIperfJSON(t *testing.T) {
	bps, err := ParseIperfJSON([]byte(`{"end":{"sum_received":{"bits_per_second":9.5e7}}}`))
	if err != nil || bps != 9.5e7 {
		t.Fatalf("%v %v", bps, err)
	}
	if _, err := ParseIperfJSON([]byte(`{"error":"unable to connect"}`)); err == nil || !strings.Contains(err.Error(), "unable") {
		t.Fatalf("iperf error not surfaced: %v", err)
	}
	if _, err := ParseIperfJSON([]byte(`garbage`)); err == nil {
		t.Fatal("garbage accepted")
	}
}

// countWriter counts packets without allocating.
type countWriter struct{ n atomic.Int64 }

func (w *countWriter) Write(b []byte) (int, error) { w.n.Add(1); return len(b), nil }

func TestDelayLineSteadyStateAllocatesNothing(t *testing.T) {
	r, w := newChanReader(), &countWriter{}
	l := NewDelayLine(r, w, LineConfig{Rate: 1e9, Delay: 100 * time.Microsecond, QueueBytes: 8 << 20}, nil)
	defer func() { l.Close(); r.Close(); l.Wait() }()
	pkt := make([]byte, 1500)
	// Bursts of 100: at most 100 packets are ever held, so after the first
	// burst every buffer comes from the free list.
	push := func(bursts int) {
		for range bursts {
			want := w.n.Load() + 100
			for range 100 {
				r.ch <- pkt
			}
			deadline := time.Now().Add(10 * time.Second)
			for w.n.Load() != want {
				if time.Now().After(deadline) {
					t.Fatalf("burst not delivered: %d of %d", w.n.Load(), want)
				}
				runtime.Gosched()
			}
		}
	}
	push(5) // warm up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	push(30)
	runtime.ReadMemStats(&after)
	// The waits above poll; allow a little for the runtime and the test.
	if d := after.Mallocs - before.Mallocs; d > 30 {
		t.Fatalf("%d allocations for 3000 packets: the per-packet path allocates", d)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int{"": 0, "0": 0, "4096": 4096, "256k": 256 << 10, "256KiB": 256 << 10, "1m": 1 << 20, "2M": 2 << 20} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "x", "1g", "1.5k", "3000m"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
		}
	}
	for in, want := range map[string]int{"": 0, "kernel": -1, "16MiB": 16 << 20} {
		if got, err := ParseTCPBuffers(in); err != nil || got != want {
			t.Errorf("ParseTCPBuffers(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := (Spec{DCs: "a", TCPBuffers: "lots"}).Config(); err == nil || !strings.Contains(err.Error(), "--tcp-buffers") {
		t.Errorf("--tcp-buffers lots: %v, want an error naming the flag", err)
	}
	if _, err := (Spec{DCs: "a", TCPBuffers: "4k"}).Config(); err == nil {
		t.Error("TCP buffers of 4 KiB accepted")
	}
}
