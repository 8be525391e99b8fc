package ackmerge

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// loop drives an established flow in steady state without allocating: each
// round is one client data segment forked to every branch and one data
// segment (reply plus ack) from each branch, merged into one to the client.
type loop struct {
	h        *harness
	pool     [][]byte
	next     int
	cliTmpl  []byte
	brTmpl   [][]byte
	work     []byte
	seq, rep uint32 // relative client and reply bytes so far
	size     int
	now      time.Time
}

func newLoop(tb testing.TB, n, size int) *loop { return newLoopCfg(tb, n, size, Config{}) }

func newLoopCfg(tb testing.TB, n, size int, cfg Config) *loop {
	h := newHarness(tb, n, cfg)
	h.open()
	l := &loop{h: h, size: size, now: h.now}
	for i := 0; i < 16; i++ {
		l.pool = append(l.pool, make([]byte, testOff+2048))
	}
	h.out.Alloc = func(n int) []byte {
		b := l.pool[l.next]
		l.next = (l.next + 1) % len(l.pool)
		if n > len(b) {
			return nil
		}
		return b[:n]
	}
	h.out.Pkts = make([]Emit, 0, 16)
	h.out.Events = make([]Event, 0, 16)
	data := make([]byte, size)
	l.cliTmpl = mkPacket(seg{Src: cliAddr, Dst: vipAddr, Seq: h.cliISS + 1, Ack: h.ref() + 1, Flags: packet.FlagACK | packet.FlagPSH, Wnd: 502, Data: data})
	for k := 0; k < n; k++ {
		l.brTmpl = append(l.brTmpl, mkPacket(seg{Src: nodeAddr(k), Dst: cliAddr, Seq: h.iss[k] + 1, Ack: h.cliISS + 1, Flags: packet.FlagACK | packet.FlagPSH, Wnd: 500, Data: data}))
	}
	l.work = make([]byte, testOff+2048)
	return l
}

func (l *loop) step(tmpl []byte, from int, seq, ack uint32) {
	w := l.work[:len(tmpl)]
	copy(w, tmpl)
	var p packet.TCP
	if p.Parse(w[testOff:], virtio.Hdr(w[testOff-virtio.HdrLen:testOff])) != nil {
		panic("parse")
	}
	p.SetSeq(p.Seq() + seq)
	p.SetAck(p.Ack() + ack)
	l.h.out.Reset()
	l.h.f.Step(w, &p, from, l.now, &l.h.out)
}

func (l *loop) round() {
	l.step(l.cliTmpl, ToClient, l.seq, l.rep)
	l.seq += uint32(l.size)
	for k := range l.brTmpl {
		l.step(l.brTmpl[k], k, l.rep, l.seq)
	}
	l.rep += uint32(l.size)
}

func TestSteadyStateAllocatesNothing(t *testing.T) {
	for _, n := range []int{1, 3, 6} {
		l := newLoop(t, n, 1000)
		for i := 0; i < 10; i++ {
			l.round()
		}
		// The last step must have forwarded the merged reply.
		if len(l.h.out.Pkts) != 1 || l.h.out.Pkts[0].To != ToClient {
			t.Fatalf("n=%d: steady state not forwarding: %v", n, l.h.out.Pkts)
		}
		s := decode(t, l.h.out.Pkts[0], testOff)
		if len(s.Data) != 1000 || l.h.relAck(s) != l.seq {
			t.Fatalf("n=%d: forwarded %v", n, s)
		}
		if a := testing.AllocsPerRun(200, l.round); a != 0 {
			t.Fatalf("n=%d: %v allocations per round, want 0", n, a)
		}
	}
}

// baselineNs is the cost of what any middlebox does per segment (copy in,
// parse, rewrite the destination): the yardstick for ackmerge's cost,
// measured once per run by a plain timed loop.
var baselineNs = sync.OnceValue(func() float64 {
	l := newLoop(&testing.T{}, 1, 1000)
	w := l.work[:len(l.cliTmpl)]
	dst := nodeAddr(0)
	const iters = 500000
	start := time.Now()
	for i := 0; i < iters; i++ {
		copy(w, l.cliTmpl)
		var p packet.TCP
		if p.Parse(w[testOff:], virtio.Hdr(w[testOff-virtio.HdrLen:testOff])) != nil {
			panic("parse")
		}
		p.SetDstAddr(dst.Addr())
		p.SetDstPort(dst.Port())
	}
	return float64(time.Since(start).Nanoseconds()) / iters
})

// BenchmarkFlowRound measures one round (a 1000-byte client segment forked
// to n branches, and n 1000-byte branch segments merged into one to the
// client) and reports the cost per input segment, also as a ratio to the
// baseline rewrite measured in the same run.
func BenchmarkFlowRound(b *testing.B) {
	base := baselineNs()
	for n := 1; n <= 6; n++ {
		b.Run(fmt.Sprintf("branches=%d", n), func(b *testing.B) {
			l := newLoop(b, n, 1000)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				l.round()
			}
			perSeg := float64(time.Since(start).Nanoseconds()) / float64(b.N) / float64(1+n)
			b.ReportMetric(perSeg, "ns/segment")
			b.ReportMetric(perSeg/base, "x-baseline")
		})
	}
}

// BenchmarkVerifyCost measures a FlowRound with reply verification on
// (verify.go: every branch segment hashed, a comparison point per round,
// as in request/response traffic, and a chunk end every few rounds) and
// the same round with verification off, in alternating blocks of rounds
// so that the load of a shared machine weighs on both alike; it reports
// both per input segment and their ratio.
func BenchmarkVerifyCost(b *testing.B) {
	for _, n := range []int{2, 3} {
		for _, size := range []int{100, 1000} {
			b.Run(fmt.Sprintf("branches=%d/size=%d", n, size), func(b *testing.B) {
				on := newLoop(b, n, size)
				off := newLoopCfg(b, n, size, Config{NoVerify: true})
				b.ReportAllocs()
				b.ResetTimer()
				var tOn, tOff time.Duration
				const block = 256
				rounds := 0
				for b.Loop() {
					start := time.Now()
					for range block {
						on.round()
					}
					t1 := time.Now()
					for range block {
						off.round()
					}
					tOn += t1.Sub(start)
					tOff += time.Since(t1)
					rounds += block
				}
				if st := on.h.f.Stats(); st.RepliesVerified == 0 || st.ReplyMismatches != 0 {
					b.Fatalf("verification did not run: %+v", st)
				}
				segs := float64(rounds * (1 + n))
				b.ReportMetric(float64(tOn.Nanoseconds())/segs, "ns/segment")
				b.ReportMetric(float64(tOff.Nanoseconds())/segs, "ns/segment-noverify")
				b.ReportMetric(float64(tOn)/float64(tOff), "x-noverify")
			})
		}
	}
}
