package sequencer

import (
	"errors"
	"time"
)

// MaxG is the largest position the clock hands out: G stays below 1<<63 so
// that a stamped tag's counter can never collide with an overflowing ABD
// counter.
const MaxG = 1<<63 - 1

// DefaultLead is how far above the last position handed out the persisted
// ceiling is reserved.
const DefaultLead = 2 * time.Second

// ErrCeiling means the clock reached its persisted ceiling: no position may
// be handed out until a higher ceiling is persisted (see Clock.Want).
var ErrCeiling = errors.New("sequencer: position would pass the persisted ceiling")

// Clock is a 64-bit hybrid logical clock: each position is
// max(now in Unix ns, last + 1), so positions are unique, strictly
// increasing and close to real time. It never hands out a position above
// its ceiling, a value the caller persisted before telling the clock
// (Persisted), so a clock restarted from the persisted ceiling begins above
// every position the previous run handed out: G never goes back.
//
// Not safe for concurrent use.
type Clock struct {
	last    uint64 // last position handed out (or the start floor)
	ceiling uint64 // highest position that may be handed out (persisted)
	lead    uint64 // reservation length in ns
}

// NewClock starts a clock above both the stored ceiling of a previous run
// and now. Its ceiling starts at its floor: the caller must persist
// Want's value and call Persisted before the first Next succeeds.
func NewClock(stored uint64, now int64, lead time.Duration) *Clock {
	if lead <= 0 {
		lead = DefaultLead
	}
	floor := max(stored, unixNs(now))
	return &Clock{last: floor, ceiling: floor, lead: uint64(lead)}
}

func unixNs(now int64) uint64 {
	if now < 0 {
		return 0
	}
	return uint64(now)
}

// Next hands out the next position. If real time has run past the
// persisted ceiling but the ceiling still leaves room, positions continue
// as last+1 (still unique and increasing) up to the ceiling; after that
// Next fails with ErrCeiling.
func (c *Clock) Next(now int64) (uint64, error) {
	if c.last >= c.ceiling || c.last >= MaxG {
		return 0, ErrCeiling
	}
	g := max(unixNs(now), c.last+1)
	if g > c.ceiling {
		g = c.last + 1 // real time ran past the ceiling: crawl up to it
	}
	c.last = g
	return g, nil
}

// Want reports the ceiling the caller should persist now: when less than
// half the lead is left between the clock's current position and its
// ceiling, it returns a new ceiling one lead ahead and true.
func (c *Clock) Want(now int64) (uint64, bool) {
	cur := max(unixNs(now), c.last)
	if c.ceiling > cur && c.ceiling-cur >= c.lead/2 {
		return 0, false
	}
	want := cur + c.lead
	if want > MaxG || want < cur {
		want = MaxG
	}
	if want <= c.ceiling {
		return 0, false
	}
	return want, true
}

// Persisted tells the clock that ceiling is durably stored; it never lowers
// the ceiling.
func (c *Clock) Persisted(ceiling uint64) {
	c.ceiling = max(c.ceiling, min(ceiling, MaxG))
}

// Last is the last position handed out (or the start floor).
func (c *Clock) Last() uint64 { return c.last }

// Ceiling is the highest position the clock may hand out.
func (c *Clock) Ceiling() uint64 { return c.ceiling }
