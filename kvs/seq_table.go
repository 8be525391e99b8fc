package kvs

// Stamp table of a sequenced node: for every forked client flow, the global
// order position G of each byte range of the client's stream, as the
// middlebox's order stream announced it (docs/design-sequencer.md).
//
//	order conn (middlebox) --HELLO/OPEN/STAMP/CLOSE--> stampTable <--lookup/await-- RESP conns
//
// A RESP connection finds its flow by (client address, client port, local
// port). A write whose last byte is at stream offset x takes the G of the
// range covering x; it waits if that range has not arrived. Ranges below the
// offset a connection has finished with are freed; flows are bounded in
// number, and flows of another middlebox epoch are dropped.

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// Limits of the stamp table.
const (
	defaultMaxFlows  = 1 << 16
	defaultMaxRanges = 1 << 13 // per flow; a window of 8192 segments
	defaultMaxTotal  = 1 << 20 // ranges over all flows (24 MiB)
)

var (
	errStampTimeout = errors.New("sequencer stamp for this write did not arrive before the command deadline; write not applied")
	errUnsequenced  = errors.New("unsequenced write refused: this node is in sequenced mode and writes must come through the middlebox's sequenced port (no order stream for this connection); reads are served on any connection")
)

type stampRange struct{ start, end, g uint64 }

type flowState struct {
	epoch    uint64
	opened   bool // OPEN (or a STAMP) received
	closed   bool // CLOSE received
	conns    int  // RESP connections attached
	orphan   bool // its connections all left before a CLOSE: this incarnation is over
	consumed uint64
	ranges   []stampRange  // sorted by start, disjoint
	changed  chan struct{} // non-nil while a command waits for a stamp of this flow
}

// wake wakes the commands waiting for a stamp of f.
func (f *flowState) wake() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

type lookupResult uint8

const (
	stampFound   lookupResult = iota
	stampPending              // flow known, range not (yet) announced
	flowUnknown               // no OPEN or STAMP for this flow
)

// stampTable is safe for concurrent use.
type stampTable struct {
	mu        sync.Mutex
	epoch     uint64
	flows     map[orderwire.Flow]*flowState
	changed   chan struct{} // non-nil while someone waits; closed on change
	maxFlows  int
	maxRanges int
	maxTotal  int
	total     int    // ranges held over all flows
	maxG      uint64 // highest G announced to this node (since it started)
	stats     *SeqStats
}

func newStampTable(stats *SeqStats) *stampTable {
	return &stampTable{flows: map[orderwire.Flow]*flowState{}, maxFlows: defaultMaxFlows,
		maxRanges: defaultMaxRanges, maxTotal: defaultMaxTotal, stats: stats}
}

// forgetLocked accounts for f's ranges being discarded (reset or delete).
func (t *stampTable) forgetLocked(f *flowState) { t.total -= len(f.ranges) }

// notifyLocked wakes every waiter: used for the (rare) events that change
// which flows exist; a new stamp wakes only its flow's waiters.
func (t *stampTable) notifyLocked() {
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
}

func (t *stampTable) waitChanLocked() <-chan struct{} {
	if t.changed == nil {
		t.changed = make(chan struct{})
	}
	return t.changed
}

// checkFloor refuses a sequencer whose clock is below a G this node has
// already been given: its stamps would order new writes before older ones.
func (t *stampTable) checkFloor(gFloor uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gFloor < t.maxG {
		return fmt.Errorf("%w: sequencer's clock at %d, below G %d already announced (its state file was lost or rolled back?)", errOrderFrame, gFloor, t.maxG)
	}
	return nil
}

// hello starts (or continues) a middlebox epoch: flows of other epochs are
// dropped, so their stale stamps can never be used.
func (t *stampTable) hello(epoch uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if epoch == t.epoch {
		return
	}
	t.epoch = epoch
	for k, f := range t.flows {
		if f.opened && f.epoch != epoch {
			t.stats.FlowsDropped.Add(1)
			if f.conns > 0 {
				// Keep the entry for its connections, forgetting its stamps:
				// their writes can no longer be stamped and fail.
				f.wake()
				t.forgetLocked(f)
				*f = flowState{conns: f.conns}
				continue
			}
			t.forgetLocked(f)
			delete(t.flows, k)
		}
	}
	t.notifyLocked()
}

// entryLocked returns the flow's state, creating it if there is room.
func (t *stampTable) entryLocked(k orderwire.Flow) *flowState {
	if f := t.flows[k]; f != nil {
		return f
	}
	if len(t.flows) >= t.maxFlows && !t.evictLocked() {
		t.stats.FlowsDropped.Add(1)
		return nil
	}
	f := &flowState{}
	t.flows[k] = f
	return f
}

// evictLocked frees one flow no connection uses, closed ones first.
func (t *stampTable) evictLocked() bool {
	var victim *orderwire.Flow
	for k, f := range t.flows {
		if f.conns > 0 {
			continue
		}
		if f.closed {
			t.forgetLocked(f)
			delete(t.flows, k)
			return true
		}
		if victim == nil {
			kk := k
			victim = &kk
		}
	}
	if victim != nil {
		t.forgetLocked(t.flows[*victim])
		delete(t.flows, *victim)
		return true
	}
	return false
}

// open records an OPEN. An OPEN of a flow already open in this epoch is a
// re-send after an order-stream reconnect and keeps its stamps; otherwise
// (new flow, closed flow, other epoch: a new connection on the same 4-tuple)
// the flow starts afresh.
func (t *stampTable) open(k orderwire.Flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.entryLocked(k)
	if f == nil {
		return
	}
	if f.opened && !f.closed && !f.orphan && f.epoch == t.epoch {
		return
	}
	f.wake()
	t.forgetLocked(f)
	*f = flowState{epoch: t.epoch, opened: true, conns: f.conns}
	t.notifyLocked()
}

// stamp records that bytes [start, end) of flow k have position g. A byte's
// stamp is fixed by its first announcement: an overlapping announcement with
// another g is counted as a conflict and ignored.
func (t *stampTable) stamp(k orderwire.Flow, start, end, g uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[k]
	if f == nil || f.closed || f.orphan || f.epoch != t.epoch {
		// A STAMP without OPEN (OPEN lost with a reconnect) opens the flow.
		if f = t.entryLocked(k); f == nil {
			return
		}
		if !f.opened || f.closed || f.orphan || f.epoch != t.epoch {
			f.wake()
			t.forgetLocked(f)
			*f = flowState{epoch: t.epoch, opened: true, conns: f.conns}
			t.notifyLocked()
		}
	}
	if end <= f.consumed {
		return // re-sent range already used
	}
	t.maxG = max(t.maxG, g)
	r := stampRange{start, end, g}
	n := len(f.ranges)
	if n == 0 || start >= f.ranges[n-1].end {
		f.ranges = append(f.ranges, r) // the common case: in order
		t.total++
	} else {
		i := sort.Search(n, func(i int) bool { return f.ranges[i].end > start })
		if i < n && f.ranges[i].start < end {
			// Overlap: an exact re-send is expected; anything else conflicts.
			if f.ranges[i] != r {
				t.stats.StampConflicts.Add(1)
			}
			return
		}
		f.ranges = append(f.ranges, stampRange{})
		copy(f.ranges[i+1:], f.ranges[i:])
		f.ranges[i] = r
		t.total++
	}
	if len(f.ranges) > t.maxRanges || t.total > t.maxTotal {
		// Bounded: the flow's oldest range goes (a write needing it fails).
		f.ranges = append(f.ranges[:0], f.ranges[1:]...)
		t.total--
		t.stats.StampsDropped.Add(1)
	}
	f.wake()
}

// close records a CLOSE; the flow is freed once no connection uses it.
func (t *stampTable) close(k orderwire.Flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[k]
	if f == nil {
		return
	}
	f.wake()
	if f.conns == 0 {
		t.forgetLocked(f)
		delete(t.flows, k)
	} else {
		f.closed = true
	}
	t.notifyLocked()
}

// attach registers a RESP connection on flow k.
func (t *stampTable) attach(k orderwire.Flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.entryLocked(k); f != nil {
		if f.orphan {
			// The 4-tuple is reused by a new connection: the old
			// incarnation's stamps (its CLOSE lost) must not serve it.
			f.wake()
			t.forgetLocked(f)
			*f = flowState{}
			t.notifyLocked()
		}
		f.conns++
	}
}

// detach unregisters a RESP connection; a flow no longer open at the
// middlebox (closed, or never opened) is freed with its last connection.
func (t *stampTable) detach(k orderwire.Flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[k]
	if f == nil {
		return
	}
	if f.conns > 0 {
		f.conns--
	}
	if f.conns == 0 {
		t.forgetLocked(f)
		if f.closed || !f.opened {
			delete(t.flows, k)
		} else {
			f.orphan = true
			f.ranges = nil
		}
	}
}

// consume frees the ranges lying wholly below stream offset off: the
// connection has taken every stamp it needs there.
func (t *stampTable) consume(k orderwire.Flow, off uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[k]
	if f == nil || off <= f.consumed {
		return
	}
	f.consumed = off
	i := 0
	for i < len(f.ranges) && f.ranges[i].end <= off {
		i++
	}
	if i > 0 {
		f.ranges = append(f.ranges[:0], f.ranges[i:]...)
		t.total -= i
	}
}

func (t *stampTable) lookupLocked(k orderwire.Flow, off uint64) (uint64, lookupResult) {
	f := t.flows[k]
	if f == nil || !f.opened || f.epoch != t.epoch {
		return 0, flowUnknown
	}
	rs := f.ranges
	i := sort.Search(len(rs), func(i int) bool { return rs[i].end > off })
	if i < len(rs) && rs[i].start <= off {
		return rs[i].g, stampFound
	}
	return 0, stampPending
}

// lookup returns the stamp of byte off of flow k, if announced.
// awaitOpen reports whether flow k is open (an OPEN or a STAMP came),
// waiting for it until deadline.
func (t *stampTable) awaitOpen(k orderwire.Flow, deadline time.Time) bool {
	for {
		t.mu.Lock()
		_, res := t.lookupLocked(k, 0)
		if res != flowUnknown {
			t.mu.Unlock()
			return true
		}
		ch := t.waitChanLocked()
		t.mu.Unlock()
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		tm := time.NewTimer(d)
		select {
		case <-ch:
			tm.Stop()
		case <-tm.C:
			return false
		}
	}
}

func (t *stampTable) lookup(k orderwire.Flow, off uint64) (uint64, lookupResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lookupLocked(k, off)
}

// await returns the stamp of byte off of flow k, waiting for it until d
// passes. If the flow stays unknown for grace, the write is refused as
// unsequenced. waited reports whether it had to wait.
func (t *stampTable) await(k orderwire.Flow, off uint64, d *deadline, grace time.Duration) (g uint64, waited bool, err error) {
	var gt *time.Timer
	defer func() {
		if gt != nil {
			gt.Stop()
		}
	}()
	for {
		t.mu.Lock()
		g, res := t.lookupLocked(k, off)
		if res == stampFound {
			t.mu.Unlock()
			return g, waited, nil
		}
		ch := t.waitChanLocked()
		var fch <-chan struct{}
		if f := t.flows[k]; f != nil && res == stampPending {
			if f.changed == nil {
				f.changed = make(chan struct{})
			}
			fch = f.changed
		}
		t.mu.Unlock()
		if d.fired {
			return 0, waited, t.failure(res)
		}
		var graceC <-chan time.Time
		if res == flowUnknown {
			if gt == nil {
				gt = time.NewTimer(grace)
			}
			graceC = gt.C
		}
		waited = true
		select {
		case <-ch:
		case <-fch:
		case <-graceC:
			if _, res := t.lookup(k, off); res == flowUnknown {
				return 0, waited, errUnsequenced
			}
		case <-d.t.C:
			d.fired = true
		}
	}
}

func (t *stampTable) failure(res lookupResult) error {
	if res == flowUnknown {
		return errUnsequenced
	}
	return errStampTimeout
}

// size returns the number of flows and ranges held (tests, INFO).
func (t *stampTable) size() (flows, ranges int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.flows {
		ranges += len(f.ranges)
	}
	return len(t.flows), ranges
}

// waiting reports whether a command waits for a stamp (tests).
func (t *stampTable) waiting() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.flows {
		if f.changed != nil {
			return true
		}
	}
	return t.changed != nil
}
