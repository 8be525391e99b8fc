package sequencer

import (
	"errors"
	"time"
)

// DefaultMaxRanges bounds the stamped ranges a flow keeps until every
// branch has acknowledged them. The client's window already bounds them;
// this is the backstop against a client that sends many tiny segments.
const DefaultMaxRanges = 4096

// DefaultRetain is how long a flow keeps ranges every branch has
// acknowledged, so that a stamp lost with a broken order connection after
// its bytes were acknowledged is still sent again on the next one.
const DefaultRetain = 2 * time.Second

// ErrTooManyRanges means a flow holds MaxRanges unacknowledged ranges: the
// segment must not be forwarded (it gets no stamp); the client retransmits
// it once acknowledgements free ranges.
var ErrTooManyRanges = errors.New("sequencer: too many unacknowledged stamped ranges")

// Range says that bytes [Start, End) of a client stream have position G.
// Offsets count from the first data byte after the client's SYN.
type Range struct {
	Start, End, G uint64
}

// Flow stamps one client stream. A byte's stamp is fixed the first time a
// segment carrying it is seen: a segment that reaches past the highest
// offset seen so far stamps the new bytes [high, end) with a fresh
// position; retransmissions and re-segmented copies of stamped bytes get
// none. Bytes skipped by a reordered segment are stamped with it (the
// client had sent them already, which is all the order needs). Ranges stay
// until every branch has acknowledged them (Ack) and then for the retention
// time (or until the range bound needs their room), so they can be sent
// again on a reconnected order stream.
//
// The zero Flow is not usable; call Reset. Not safe for concurrent use.
type Flow struct {
	isn    uint32  // client's SYN sequence number
	high   uint64  // end of the stamped bytes
	acked  uint64  // every branch holds the bytes below
	max    int     // bound on the unacknowledged ranges
	retain uint64  // ns to keep acknowledged ranges
	ranges []Range // stamped and retained; ascending, contiguous
}

// Reset makes f the stamper of a stream whose SYN had sequence number isn
// and keeps its range buffer for reuse. maxRanges <= 0 means
// DefaultMaxRanges; retain < 0 means DefaultRetain.
func (f *Flow) Reset(isn uint32, maxRanges int, retain time.Duration) {
	if maxRanges <= 0 {
		maxRanges = DefaultMaxRanges
	}
	if retain < 0 {
		retain = DefaultRetain
	}
	*f = Flow{isn: isn, max: maxRanges, retain: uint64(retain), ranges: f.ranges[:0]}
}

// offset unwraps sequence number seq to a 64-bit stream offset near the
// highest offset seen. ok is false for sequence numbers before the stream
// start (the SYN itself, or garbage far behind).
func (f *Flow) offset(seq uint32) (uint64, bool) {
	rel := seq - (f.isn + 1)
	d := int64(int32(rel - uint32(f.high)))
	off := int64(f.high) + d
	if off < 0 {
		return 0, false
	}
	return uint64(off), true
}

// Observe looks at a client segment carrying n data bytes from sequence
// number seq. If the segment reaches past the highest offset seen, the new
// bytes get position c.Next(now) and Observe returns their range and true.
// On an error (the clock's ceiling, too many ranges) nothing is stamped and
// the segment must not be forwarded.
func (f *Flow) Observe(seq uint32, n int, c *Clock, now int64) (Range, bool, error) {
	if n <= 0 {
		return Range{}, false, nil
	}
	start, ok := f.offset(seq)
	if !ok {
		// The segment starts before offset 0 (data on a SYN is not
		// forwarded as data): only bytes from offset 0 on count.
		rel := int64(int32(seq - (f.isn + 1)))
		if rel+int64(n) <= 0 {
			return Range{}, false, nil
		}
		n, start = int(rel+int64(n)), 0
	}
	end := start + uint64(n)
	if end <= f.high {
		return Range{}, false, nil
	}
	if len(f.ranges) >= f.max {
		f.free(len(f.ranges)) // acknowledged ranges give way first
		if len(f.ranges) >= f.max {
			return Range{}, false, ErrTooManyRanges
		}
	}
	g, err := c.Next(now)
	if err != nil {
		return Range{}, false, err
	}
	r := Range{Start: f.high, End: end, G: g}
	f.ranges = append(f.ranges, r)
	f.high = end
	return r, true, nil
}

// Ack records that every branch acknowledged the client's bytes up to
// sequence number ack (exclusive) and frees the acknowledged ranges
// stamped more than the retention time before now (a position is a time
// in ns, give or take the clock's crawl).
func (f *Flow) Ack(ack uint32, now int64) {
	if off, ok := f.offset(ack); ok && off > f.acked {
		f.acked = min(off, f.high)
	}
	k := 0
	for k < len(f.ranges) && f.ranges[k].End <= f.acked && f.ranges[k].G+f.retain < unixNs(now) {
		k++
	}
	f.free(k)
}

// free drops up to k acknowledged ranges from the front.
func (f *Flow) free(k int) {
	n := 0
	for n < k && n < len(f.ranges) && f.ranges[n].End <= f.acked {
		n++
	}
	if n > 0 {
		m := copy(f.ranges, f.ranges[n:])
		f.ranges = f.ranges[:m]
	}
}

// Ranges returns the stamped ranges not yet acknowledged by every branch,
// preceded by the acknowledged ones still retained, in stream order. The
// slice is f's own: valid until the next call that changes f.
func (f *Flow) Ranges() []Range { return f.ranges }

// High is the end of the stamped bytes (the highest offset seen).
func (f *Flow) High() uint64 { return f.high }

// Acked is the offset below which every branch holds the bytes.
func (f *Flow) Acked() uint64 { return f.acked }

// FlowState is a flow's exportable state, for a restarted or standby
// sequencer that takes a flow over.
type FlowState struct {
	ISN    uint32
	High   uint64
	Acked  uint64
	Ranges []Range
}

// Export returns a copy of f's state.
func (f *Flow) Export() FlowState {
	return FlowState{ISN: f.isn, High: f.high, Acked: f.acked, Ranges: append([]Range(nil), f.ranges...)}
}

// Restore makes f continue from an exported state.
func (f *Flow) Restore(s FlowState, maxRanges int, retain time.Duration) {
	f.Reset(s.ISN, maxRanges, retain)
	f.high, f.acked = s.High, s.Acked
	f.ranges = append(f.ranges, s.Ranges...)
}
