package kvs

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// SeqStats are a sequenced node's counters, safe for concurrent use.
type SeqStats struct {
	Writes         atomic.Uint64 // write commands applied with a stamped tag (one round)
	StampWaits     atomic.Uint64 // writes whose stamp had not arrived when they were parsed
	StampTimeouts  atomic.Uint64 // writes failed: stamp missing at the deadline (never applied)
	Refused        atomic.Uint64 // writes refused: connection is not a sequenced flow
	AppliedG       atomic.Uint64 // highest G of a write this node completed
	OrderConns     atomic.Int64  // order-stream connections open
	OrderBad       atomic.Uint64 // order connections dropped: failed handshake or corrupt frame
	FlowsDropped   atomic.Uint64 // flow states dropped (old epoch, table full)
	StampsDropped  atomic.Uint64 // ranges dropped because a flow held too many
	StampConflicts atomic.Uint64 // re-announced ranges whose G differed (ignored)
	Wait           WaitHistogram // how long writes waited for their stamp
}

// observeApplied raises AppliedG to g.
func (s *SeqStats) observeApplied(g uint64) {
	for {
		cur := s.AppliedG.Load()
		if g <= cur || s.AppliedG.CompareAndSwap(cur, g) {
			return
		}
	}
}

// waitBuckets are the upper bounds of WaitHistogram's buckets.
var waitBuckets = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second,
}

// WaitHistogram is a cumulative-free latency histogram with fixed buckets
// (waitBuckets, then +Inf), safe for concurrent use.
type WaitHistogram struct {
	counts [len(waitBuckets) + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

// Observe records one wait.
func (h *WaitHistogram) Observe(d time.Duration) {
	i := 0
	for i < len(waitBuckets) && d > waitBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(max(d, 0)))
}

// Count returns the number of observations.
func (h *WaitHistogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// Quantile returns the upper bound of the bucket holding quantile q (0..1);
// an observation beyond the last bucket reports as -1 (+Inf).
func (h *WaitHistogram) Quantile(q float64) time.Duration {
	total := h.Count()
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	rank = min(max(rank, 1), total)
	var c uint64
	for i := range h.counts {
		c += h.counts[i].Load()
		if c >= rank {
			if i == len(waitBuckets) {
				return -1
			}
			return waitBuckets[i]
		}
	}
	return -1
}

// appendInfo renders the INFO "# Sequencer" section.
func (s *SeqStats) appendInfo(b *strings.Builder, flows, ranges int) {
	fmt.Fprintf(b, "\r\n# Sequencer\r\nsdnkvs_seq_writes:%d\r\nsdnkvs_seq_stamp_waits:%d\r\nsdnkvs_seq_stamp_timeouts:%d\r\nsdnkvs_seq_unsequenced_refused:%d\r\nsdnkvs_seq_applied_g:%d\r\n",
		s.Writes.Load(), s.StampWaits.Load(), s.StampTimeouts.Load(), s.Refused.Load(), s.AppliedG.Load())
	fmt.Fprintf(b, "sdnkvs_seq_order_conns:%d\r\nsdnkvs_seq_order_bad:%d\r\nsdnkvs_seq_flows:%d\r\nsdnkvs_seq_ranges:%d\r\nsdnkvs_seq_flows_dropped:%d\r\nsdnkvs_seq_stamps_dropped:%d\r\nsdnkvs_seq_stamp_conflicts:%d\r\n",
		s.OrderConns.Load(), s.OrderBad.Load(), flows, ranges, s.FlowsDropped.Load(), s.StampsDropped.Load(), s.StampConflicts.Load())
	fmt.Fprintf(b, "sdnkvs_seq_stamp_wait_count:%d\r\nsdnkvs_seq_stamp_wait_sum_us:%d\r\n", s.Wait.Count(), s.Wait.sumNs.Load()/1000)
	for i, ub := range waitBuckets {
		fmt.Fprintf(b, "sdnkvs_seq_stamp_wait_le_%dus:%d\r\n", ub.Microseconds(), s.Wait.counts[i].Load())
	}
	fmt.Fprintf(b, "sdnkvs_seq_stamp_wait_le_inf:%d\r\n", s.Wait.counts[len(waitBuckets)].Load())
}
