package kvs

// Catch-up, local writes (docs/design-lifecycle.md, "The driver"): the
// driver writes a pulled page at its own DC's quorum in batches, not one
// quorum op per record. A batch is a run of the page's records (already in
// the Scan format) of at most catchupBatchBytes, or one larger record; it
// goes to every DC peer as one kindApply frame and into the local store,
// and is done when a quorum of voters stored every record of it. Each
// replica puts each record through its committer with the record's own
// tag, so the higher tag wins per key exactly as for a kindWrite (a record
// this DC got newer is kept) and the change index follows.
//
//	driver ──kindApply(records)──► each DC peer: Put every record ─► one answer
//	       └─ Put every record locally ──────────────────────────► one answer
//
// Batches in flight are bounded (catchupApplyBatches),
// so memory and the replicas' committer queues stay small and a client
// write waits behind little catch-up data on a peer connection or in a
// committer.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

const (
	// catchupBatchBytes bounds a batch's records (a peer's frame limit,
	// scanBatch beyond the largest record, allows one more of any size).
	catchupBatchBytes = 32 << 10
	// catchupApplyBatches bounds the batches in flight to the local
	// replicas: a client write queued behind them in a replica's committer
	// waits for at most 4 x 32 KiB of catch-up records (~2,000 small ones),
	// or four larger ones.
	catchupApplyBatches = 4
	catchupApplyTimeout = 10 * time.Second
)

// applySink counts a batch's record writes on one replica and calls fin
// once, after the last, with whether all were stored.
type applySink struct {
	left   atomic.Int64
	failed atomic.Bool
	fin    func(ok bool)
}

func (s *applySink) writeDone(_ uint64, ok bool, _ Tag) {
	if !ok {
		s.failed.Store(true)
	}
	if s.left.Add(-1) == 0 {
		s.fin(!s.failed.Load())
	}
}

// putBatch puts every record of b (Scan format, validated) into the local
// store; fin is called once they are all durable or failed. A non-zero
// bound makes it a repair batch (Store.PutRepair, catchup_verify.go).
func (n *Node) putBatch(b []byte, count int, bound Tag, fin func(ok bool)) {
	s := &applySink{fin: fin}
	s.left.Store(int64(count))
	var rec scanRecord
	for len(b) > 0 {
		b, _ = nextScanRecord(b, &rec)
		if bound.IsZero() {
			n.store.PutBulk(rec.key, rec.tag, rec.flags, rec.val, 0, s)
		} else {
			if !n.voter.Load() {
				n.learnRep.note(rec.key, bound) // learner_repairs.go
			}
			n.store.PutRepair(rec.key, rec.tag, rec.flags, rec.val, bound, 0, s)
		}
	}
}

// checkBatch validates a batch of records from a DC peer or a source DC
// and returns their number. A repair batch may hold "no record" entries
// (zero tag, no flags, empty value).
func (n *Node) checkBatch(b []byte, repair bool) (int, error) {
	count := 0
	var rec scanRecord
	for len(b) > 0 {
		var err error
		if b, err = nextScanRecord(b, &rec); err != nil {
			return 0, fmt.Errorf("malformed records: %w", err)
		}
		absent := repair && rec.tag.IsZero() && rec.flags == 0 && len(rec.val) == 0
		if err := n.checkTag(rec.tag); err != nil || rec.tag.IsZero() && !absent {
			return 0, fmt.Errorf("record %q with a tag this DC refuses (%v): %v", rec.key, rec.tag, err)
		}
		if len(rec.key) > n.cfg.MaxKey || len(rec.val) > n.cfg.MaxValue {
			return 0, fmt.Errorf("record %q over this DC's key or value limit", rec.key)
		}
		count++
	}
	return count, nil
}

// serveApply answers a DC peer's kindApply once every record is stored; it
// returns false for a malformed batch (the caller drops the connection, as
// for a write with a bad tag). A non-zero bound (the request's tag) makes
// it a repair batch.
func (n *Node) serveApply(id uint64, bound Tag, b []byte, sc *serverConn) bool {
	count, err := n.checkBatch(b, !bound.IsZero())
	if err != nil || count == 0 {
		return false
	}
	n.putBatch(b, count, bound, func(ok bool) {
		st := statusOK
		if !ok {
			st = statusErr
		} else if !n.voter.Load() {
			st = statusLearner
		}
		buf, live := sc.w.lock()
		if !live {
			return
		}
		sc.w.unlock(appendResp(buf, kindApply, id, st, Tag{}, 0, nil))
	})
	return true
}

// appendApplyReq appends a kindApply request frame carrying records (a
// repair batch when bound is not zero).
func appendApplyReq(b []byte, id uint64, bound Tag, records []byte) []byte {
	return appendBodyReq(b, kindApply, id, bound, records)
}

// appendBodyReq appends a request frame in kindWrite's layout without a
// key: tag, no flags, and body as the value (kindApply, kindTags).
func appendBodyReq(b []byte, kind byte, id uint64, t Tag, body []byte) []byte {
	b, s := beginFrame(b)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, id)
	b = binary.BigEndian.AppendUint16(b, 0) // no key
	b = AppendTag(b, t)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	return endFrame(b, s)
}

// applyBatch is one batch in flight: answers from the replicas arrive on res.
type applyBatch struct {
	res   chan response
	sent  int // answers expected on res
	fails int // replicas that could not be asked
	dones []func()
}

// startBatch sends records (count of them) to every DC peer and puts them
// into the local store (a repair batch when bound is not zero).
func (n *Node) startBatch(records []byte, count int, bound Tag) *applyBatch {
	a := &applyBatch{res: make(chan response, len(n.peers)+1)}
	for _, p := range n.peers {
		done, err := p.startCall(a.res, func(b []byte, id uint64) []byte { return appendApplyReq(b, id, bound, records) })
		if err != nil {
			a.fails++
			continue
		}
		a.sent++
		a.dones = append(a.dones, done)
	}
	voter := n.voter.Load()
	a.sent++
	n.putBatch(records, count, bound, func(ok bool) {
		st := statusOK
		if !ok {
			st = statusErr
		} else if !voter {
			st = statusLearner
		}
		a.res <- response{kind: kindApply, status: st}
	})
	return a
}

// wait waits until a quorum of voters stored the batch, or that cannot
// happen, or its deadline.
func (n *Node) waitBatch(a *applyBatch) error {
	defer func() {
		for _, d := range a.dones {
			d()
		}
	}()
	t := time.NewTimer(catchupApplyTimeout)
	defer t.Stop()
	ok, got := 0, 0
	for ok < n.quorum {
		if ok+(a.sent-got) < n.quorum {
			return fmt.Errorf("%w: %d of %d replicas stored a batch (%d unreachable), a quorum is %d", errCatchupLocal, ok, n.size, a.fails, n.quorum)
		}
		select {
		case r := <-a.res:
			got++
			if r.kind == kindApply && r.status == statusOK {
				ok++
			}
		case <-t.C:
			return fmt.Errorf("%w: %d of %d replicas stored a batch within %v, a quorum is %d", errCatchupLocal, ok, n.size, catchupApplyTimeout, n.quorum)
		case <-n.closing:
			return errors.New("closing")
		}
	}
	return nil
}

// catchupPace is what a job's local writes pass: the --catchup-rate
// bucket (nil: unlimited) and the delay-based window (catchup_window.go).
type catchupPace struct {
	limiter *rate.Limiter
	win     *applyWindow
}

// applyRecords writes a page's records (Scan format, validated, count of
// them) at the local quorum in batches, each batch passing the rate bucket
// first, with at most the window's limit in flight (and its pause after a
// batch when the window is below one); it returns when every batch is on
// a quorum. A non-zero bound makes them repairs (Store.PutRepair).
func (n *Node) applyRecords(ctx context.Context, b []byte, bound Tag, pace *catchupPace) error {
	type flight struct {
		a     *applyBatch
		start time.Time
	}
	var inflight []flight
	var ferr error
	var pause time.Duration
	waitOldest := func() {
		f := inflight[0]
		inflight = inflight[1:]
		if err := n.waitBatch(f.a); err != nil {
			if ferr == nil {
				ferr = err
			}
			return
		}
		now := time.Now()
		pause = pace.win.done(now.Sub(f.start), now)
		n.catchStats.setWindow(pace.win)
	}
	var rec scanRecord
	for len(b) > 0 && ferr == nil {
		// Cut the next batch: records up to catchupBatchBytes, at least one.
		end, count, data := 0, 0, 0
		for rest := b; len(rest) > 0; {
			next, _ := nextScanRecord(rest, &rec)
			l := len(rest) - len(next)
			if count > 0 && end+l > catchupBatchBytes {
				break
			}
			end += l
			count++
			data += len(rec.key) + len(rec.val)
			rest = next
		}
		batch := b[:end]
		b = b[end:]
		if l := pace.limiter; l != nil { // the rate counts record data (keys and values)
			for left := data; left > 0; {
				k := min(left, l.Burst())
				if err := l.WaitN(ctx, k); err != nil {
					ferr = err
					break
				}
				left -= k
			}
			if ferr != nil {
				break
			}
		}
		for len(inflight) > 0 && len(inflight) >= pace.win.limit() {
			waitOldest()
		}
		if ferr != nil {
			break
		}
		if pause > 0 {
			n.catchStats.Paused.Add(uint64(pause))
			select {
			case <-ctx.Done():
				ferr = ctx.Err()
			case <-time.After(pause):
			}
			pause = 0
			if ferr != nil {
				break
			}
		}
		inflight = append(inflight, flight{n.startBatch(batch, count, bound), time.Now()})
	}
	for len(inflight) > 0 {
		waitOldest()
	}
	if ferr == nil {
		ferr = ctx.Err()
	}
	return ferr
}
