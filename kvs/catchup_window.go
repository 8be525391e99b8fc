package kvs

// Catch-up, how much of the joining DC's write path a job may take
// (docs/design-lifecycle.md, "Yielding to live writes"): a delay-based
// window in the manner of LEDBAT (RFC 6817), applied to the driver's own
// quorum batches instead of a link. A live write that reaches the joining
// DC waits in the same committers, on the same CPUs, as the batches the
// driver has in flight, so a batch's quorum latency above its floor is the
// delay the copy adds to live writes. The window grows while that delay
// is under the target and shrinks in proportion when it is over; below
// one batch in flight it becomes one batch then a pause.
//
// It is a pure state machine: batch latencies and a clock in, a window
// and a pause out. Not safe for concurrent use (one job's goroutine).

import "time"

const (
	// DefaultCatchupTarget is --catchup-target's default: the delay a
	// catch-up may add to a live write in the joining DC.
	DefaultCatchupTarget = 25 * time.Millisecond
	applyWindowMax       = 8.0      // batches in flight at most
	applyWindowMin       = 1.0 / 16 // one batch, then a pause of 15 batch times
	applyWindowBase      = time.Minute
	// applyWindowFilter is LEDBAT's current-delay filter: the delay is
	// the least of the last few samples, so one batch that met a GC
	// cycle or a compaction does not halve the window, and a queue that
	// lasts does.
	applyWindowFilter = 4
)

type applyWindow struct {
	target time.Duration // 0: a fixed window of catchupApplyBatches
	w      float64
	// The floor: the least latency in the current and the previous
	// period of applyWindowBase (LEDBAT's base delay history, two long).
	cur, prev   time.Duration
	periodStart time.Time
	queued      time.Duration // the filtered delay above the floor
	recent      [applyWindowFilter]time.Duration
	nrecent     int
}

func newApplyWindow(target time.Duration) *applyWindow {
	return &applyWindow{target: target, w: 1}
}

// limit is the number of batches allowed in flight.
func (a *applyWindow) limit() int {
	if a == nil || a.target <= 0 {
		return catchupApplyBatches
	}
	return max(1, int(a.w))
}

// base is the latency floor (0 before the first sample).
func (a *applyWindow) base() time.Duration {
	switch {
	case a.prev == 0:
		return a.cur
	case a.cur == 0:
		return a.prev
	}
	return min(a.cur, a.prev)
}

// done takes one batch's quorum latency, measured at now, and returns the
// pause before the next batch starts (zero unless the window is below 1).
func (a *applyWindow) done(lat time.Duration, now time.Time) time.Duration {
	if a == nil || a.target <= 0 || lat <= 0 {
		return 0
	}
	if a.periodStart.IsZero() {
		a.periodStart = now
	}
	if now.Sub(a.periodStart) >= applyWindowBase {
		a.prev, a.cur, a.periodStart = a.cur, 0, now
	}
	if a.cur == 0 || lat < a.cur {
		a.cur = lat
	}
	a.recent[a.nrecent%applyWindowFilter] = lat
	a.nrecent++
	cur := lat
	for _, l := range a.recent[:min(a.nrecent, applyWindowFilter)] {
		cur = min(cur, l)
	}
	queued := cur - a.base()
	a.queued = queued
	off := float64(a.target-queued) / float64(a.target)
	off = max(-1, min(1, off))
	if a.w > 1 {
		// LEDBAT's gain, one batch per window of samples: +1/w per
		// sample at no delay, -1/w at twice the target or more; it
		// stops at one batch.
		a.w = max(1, a.w+off/a.w)
	} else {
		// Below one batch the window is a duty cycle: at most halved or
		// grown by half per sample.
		a.w *= 1 + off/2
	}
	a.w = max(applyWindowMin, min(applyWindowMax, a.w))
	if a.w >= 1 {
		return 0
	}
	return time.Duration(float64(lat) * (1 - a.w) / a.w)
}
