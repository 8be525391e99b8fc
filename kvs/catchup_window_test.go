package kvs

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestApplyWindowSteers: with a latency that grows with the window (the
// batches queue behind each other in the committers), the window settles
// where the delay above the floor is near the target; when live load adds
// delay it falls below one batch and pauses, and it recovers afterwards.
func TestApplyWindowSteers(t *testing.T) {
	const service = 4 * time.Millisecond
	a := newApplyWindow(20 * time.Millisecond)
	now := time.Unix(0, 0)
	run := func(n int, extra time.Duration) (pauses time.Duration) {
		for i := 0; i < n; i++ {
			lat := time.Duration(a.limit())*service + extra
			p := a.done(lat, now)
			pauses += p
			now = now.Add(lat + p)
		}
		return pauses
	}
	run(400, 0)
	// Floor 4 ms (one batch); 20 ms above it is 6 batches in flight.
	if l := a.limit(); l < 5 || l > 7 {
		t.Fatalf("steady window %d (w %.2f), want about 6", l, a.w)
	}
	if q := a.queued; q > 25*time.Millisecond {
		t.Fatalf("queued %v at the steady window, target 20ms", q)
	}
	// One slow batch (a GC cycle, a compaction) is filtered out.
	w := a.w
	a.done(time.Duration(a.limit())*service+500*time.Millisecond, now)
	if a.w < w {
		t.Fatalf("one slow batch shrank the window from %.2f to %.2f", w, a.w)
	}
	// Live load: every batch takes 60 ms more.
	if p := run(40, 60*time.Millisecond); p == 0 || a.limit() != 1 || a.w >= 1 {
		t.Fatalf("under load: window %.3f, paused %v; want below one batch with pauses", a.w, p)
	}
	if a.w != applyWindowMin {
		t.Fatalf("window %.3f under a lasting overload, want the minimum %.3f", a.w, applyWindowMin)
	}
	// The load ends.
	run(400, 0)
	if l := a.limit(); l < 5 {
		t.Fatalf("window %d (w %.2f) after the load ended, want about 6 again", l, a.w)
	}
}

// TestApplyWindowFixed: a zero target (or no window) keeps the fixed
// window of catchupApplyBatches and never pauses.
func TestApplyWindowFixed(t *testing.T) {
	for _, a := range []*applyWindow{nil, newApplyWindow(0)} {
		for i := 0; i < 100; i++ {
			if p := a.done(time.Second, time.Unix(int64(i), 0)); p != 0 {
				t.Fatalf("pause %v with no target", p)
			}
		}
		if a.limit() != catchupApplyBatches {
			t.Fatalf("limit %d with no target, want %d", a.limit(), catchupApplyBatches)
		}
	}
}

// TestApplyWindowFloorForgets: the floor is the least latency of the last
// two periods, so a floor measured long ago (an idle node) stops counting
// once the node is busier for good, and the window is not held at its
// minimum forever.
func TestApplyWindowFloorForgets(t *testing.T) {
	a := newApplyWindow(20 * time.Millisecond)
	now := time.Unix(0, 0)
	a.done(time.Millisecond, now)
	for i := 0; i < 2000; i++ {
		now = now.Add(100 * time.Millisecond)
		a.done(80*time.Millisecond, now)
	}
	if b := a.base(); b != 80*time.Millisecond {
		t.Fatalf("floor %v after %v at 80 ms, want 80ms", b, 2000*100*time.Millisecond)
	}
	if a.w < 1 {
		t.Fatalf("window %.3f once the floor moved, want at least one batch", a.w)
	}
}

// FuzzApplyWindow: whatever the latencies and clock, the window stays in
// its bounds, the limit in [1, applyWindowMax], a pause is never negative
// and at most (1/min - 1) latencies, and the floor never exceeds a latency
// seen in the current period.
func FuzzApplyWindow(f *testing.F) {
	f.Add(uint64(1), uint16(20))
	f.Add(uint64(7), uint16(1))
	f.Fuzz(func(t *testing.T, seed uint64, targetMs uint16) {
		r := rand.New(rand.NewPCG(seed, 3))
		a := newApplyWindow(time.Duration(targetMs) * time.Millisecond)
		now := time.Unix(1, 0)
		var curMin time.Duration
		var periodStart time.Time
		for i := 0; i < 500; i++ {
			lat := time.Duration(r.Int64N(int64(time.Second)))
			now = now.Add(time.Duration(r.Int64N(int64(3 * time.Second))))
			p := a.done(lat, now)
			if targetMs == 0 || lat == 0 {
				if p != 0 || a.limit() != catchupApplyBatches && targetMs == 0 {
					t.Fatalf("no target: pause %v, limit %d", p, a.limit())
				}
				continue
			}
			if a.w < applyWindowMin || a.w > applyWindowMax {
				t.Fatalf("window %v out of bounds", a.w)
			}
			if l := a.limit(); l < 1 || l > int(applyWindowMax) {
				t.Fatalf("limit %d", l)
			}
			if p < 0 || p > time.Duration(float64(lat)*(1/applyWindowMin-1))+1 {
				t.Fatalf("pause %v for latency %v", p, lat)
			}
			if periodStart.IsZero() {
				periodStart = now
			}
			if now.Sub(periodStart) >= applyWindowBase {
				periodStart, curMin = now, 0
			}
			if curMin == 0 || lat < curMin {
				curMin = lat
			}
			if b := a.base(); b > curMin {
				t.Fatalf("floor %v above this period's least latency %v", b, curMin)
			}
		}
	})
}
