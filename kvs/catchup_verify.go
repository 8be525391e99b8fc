package kvs

// Verify pass, driver side (docs/design-lifecycle.md, "Verify pass"): after
// the incremental pass of a job the middlebox sent with CatchupVerify (a DC
// that replied other bytes than the others), the driver compares its own
// store with the source node's, range by range, and repairs what differs:
//
//	ranges := [whole key space]
//	for each range: digest here and there (count, SHA-256 of the records)
//	    equal: done;  large: split at the source's middle key;
//	    small (<= verifyListMax records): list both sides (key, tag, flags,
//	    value sum) and merge by key
//	a key that differs, whose local record is at or below the bound (or
//	absent), and one of whose records is a sequencer tag: fetch the source DC's quorum record, and unless it equals the
//	local one, write it at this DC's quorum as a repair (Store.PutRepair:
//	it replaces a record at or below the bound whatever its tag, and "no
//	record" removes the key).
//
// Incremental passes never touch a record at or below their cursor, so a
// corrupt record with the tag of the good one, or one with a wrong higher
// tag, survived them; the bound (the pass's start G minus the middlebox's
// margin) is where the source is authoritative: a record stamped below it
// reached the source DC's quorum before the pass began, or never will.
// Records above it are new writes in flight, left to the forked flows and
// the next incremental pass.
//
// Cost: one digest of the whole store on each side, then about three
// times the records of each range that differs (each split digests both
// halves), down to ranges of verifyLeaf records, which are listed; only
// digests, lists and the repaired records cross the WAN, and a level of
// the descent costs one round trip per verifyGroup ranges. Memory: the
// ranges of one level (two per differing range of the level above),
// verifyGroup list answers of at most verifyListMax entries, and one
// fetch of at most verifyFetchMax records. A source node that fails ends
// the verify on it; the job goes on with the next source node from the
// start (repairs already written stay: they are the source's records).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// verifier runs one verify pass against one source node.
type verifier struct {
	n     *Node
	ctx   context.Context
	cc    *catchupConn
	bound Tag
	pace  *catchupPace
	wbuf  []byte
	fetch [][]byte // candidate keys waiting for a fetch
	local map[string]listEntry
	// peers are this DC's other replicas, compared with the source as
	// this node's own store is (catchup_verify_peers.go); force holds
	// the queued keys one of them differs on (repaired even when this
	// node's own record equals the source's).
	peers  []*catchupConn
	force  map[string]bool
	queued map[string]bool // the keys in fetch
}

// boundTag is the highest tag at or below sequencer G bound.
func boundTag(g uint64) Tag { return Tag{Counter: g, Writer: ^uint64(0)} }

// verifyLeaf: a range whose digests differ is listed once neither side
// holds more records than this; verifyGroup: requests in flight at once
// (a level of the descent costs about one WAN round trip per group).
const (
	verifyLeaf  = 512
	verifyGroup = 64
)

// roundTrips sends one kindCatchup request per payload to the source node,
// all at once, and reads their answers in order.
func (v *verifier) roundTrips(payloads [][]byte) ([]response, error) {
	first, err := v.send(v.cc, payloads)
	if err != nil {
		return nil, err
	}
	return v.recv(v.cc, first, len(payloads))
}

// send writes one kindCatchup request per payload on cc and returns the
// first one's id.
func (v *verifier) send(cc *catchupConn, payloads [][]byte) (uint64, error) {
	first := cc.nextID
	v.wbuf = v.wbuf[:0]
	for _, p := range payloads {
		v.wbuf = appendReadReq(v.wbuf, kindCatchup, cc.nextID, p)
		cc.nextID++
	}
	cc.c.SetDeadline(time.Now().Add(catchupReadTimout))
	_, err := cc.c.Write(v.wbuf)
	return first, err
}

// recv reads the answers to n requests sent on cc from id first.
func (v *verifier) recv(cc *catchupConn, first uint64, n int) ([]response, error) {
	out := make([]response, n)
	for i := range out {
		body, err := cc.fr.next()
		if err != nil {
			return nil, fmt.Errorf("reading a verify answer: %w", err)
		}
		if cc == v.cc {
			v.n.catchStats.VerifyBytes.Add(uint64(len(body)))
		} else {
			v.n.catchStats.VerifyPeerBytes.Add(uint64(len(body)))
		}
		r := &out[i]
		if err := decodeResp(body, r); err != nil || r.kind != kindCatchup || r.id != first+uint64(i) {
			return nil, fmt.Errorf("malformed verify answer (kind %d, id %d, want %d): %v", r.kind, r.id, first+uint64(i), err)
		}
		if r.status != statusOK {
			return nil, fmt.Errorf("refused: %s", r.val)
		}
		r.val = append([]byte(nil), r.val...) // the reader reuses its buffer
	}
	return out, nil
}

// run compares the whole key space, one level of the descent at a time,
// verifyGroup ranges per round trip.
func (v *verifier) run() error {
	level := []keyRange{{start: []byte{}}}
	for len(level) > 0 {
		var next []keyRange
		for len(level) > 0 {
			if err := v.ctx.Err(); err != nil {
				return err
			}
			group := level[:min(len(level), verifyGroup)]
			level = level[len(group):]
			reqs := make([][]byte, len(group))
			for i, r := range group {
				reqs[i] = appendKeyRange([]byte{verifyDigest}, r)
			}
			pending := v.peersSend(reqs)
			ans, err := v.roundTrips(reqs)
			if err != nil {
				return err
			}
			peerAns := v.peersRecv(pending, len(reqs))
			var leaves []keyRange
			for i, r := range group {
				a := ans[i]
				if len(a.val) < 8+32 {
					return errBadFrame
				}
				rc := binary.BigEndian.Uint64(a.val)
				rsplit := a.val[40:]
				lc, ld, lsplit, err := v.n.store.rangeDigest(r.start, r.end)
				if err != nil {
					return fmt.Errorf("%w: local digest: %v", errCatchupLocal, err)
				}
				v.n.catchStats.VerifyRanges.Add(1)
				same := rc == uint64(lc) && bytes.Equal(ld[:], a.val[8:40])
				for _, pa := range peerAns {
					if pa == nil {
						continue
					}
					if p := pa[i].val; len(p) < 8+32 || binary.BigEndian.Uint64(p) != rc || !bytes.Equal(p[8:40], a.val[8:40]) {
						same = false
						if lsplit == nil && len(p) > 40 {
							lsplit, lc = p[40:], int(binary.BigEndian.Uint64(p))
						}
					}
				}
				if same {
					continue
				}
				split := rsplit
				if len(split) == 0 || uint64(lc) > rc && lsplit != nil {
					split = lsplit
				}
				if max(rc, uint64(lc)) <= verifyLeaf || len(split) == 0 {
					leaves = append(leaves, r)
					continue
				}
				next = append(next, keyRange{r.start, split}, keyRange{split, r.end})
			}
			if err := v.compareLeaves(leaves); err != nil {
				return err
			}
		}
		level = next
	}
	return v.flush()
}

// compareLeaves lists the leaves on the source (all at once) and compares
// each with the local records.
func (v *verifier) compareLeaves(leaves []keyRange) error {
	if len(leaves) == 0 {
		return nil
	}
	reqs := make([][]byte, len(leaves))
	for i, r := range leaves {
		reqs[i] = listReq(r)
	}
	ans, err := v.roundTrips(reqs)
	if err != nil {
		return err
	}
	for i, r := range leaves {
		if err := v.compare(r, &ans[i]); err != nil {
			return err
		}
	}
	return nil
}

// compare compares range r, at most verifyListMax records at a time, and
// queues the keys that differ; first is the source's answer to the first
// list of r, if already asked.
func (v *verifier) compare(r keyRange, first *response) error {
	start := r.start
	for {
		sub := keyRange{start, r.end}
		a := first
		first = nil
		if a == nil {
			ans, err := v.roundTrips([][]byte{listReq(sub)})
			if err != nil {
				return err
			}
			a = &ans[0]
		}
		remote, err := parseList(a.val)
		if err != nil {
			return fmt.Errorf("verify list: %w", err)
		}
		if a.flags&flagScanMore != 0 && len(remote) > 0 {
			sub.end = append(append([]byte(nil), remote[len(remote)-1].key...), 0)
		}
		clear(v.local)
		var last []byte
		more, err := v.n.store.listRange(sub, verifyListMax, func(e *listEntry) {
			c := *e
			c.key = append([]byte(nil), e.key...)
			v.local[string(c.key)] = c
			last = c.key
		})
		if err != nil {
			return fmt.Errorf("%w: local list: %v", errCatchupLocal, err)
		}
		if more {
			// Many more local records than the source's here: compare
			// up to the last one listed locally.
			sub.end = append(append([]byte(nil), last...), 0)
		}
		v.n.catchStats.VerifyListed.Add(uint64(len(remote) + len(v.local)))
		for _, re := range remote {
			if sub.end != nil && bytes.Compare(re.key, sub.end) >= 0 {
				break
			}
			le, ok := v.local[string(re.key)]
			delete(v.local, string(re.key))
			if !v.differs(re, le, ok) {
				continue
			}
			if err := v.queue(re.key); err != nil {
				return err
			}
		}
		for k, le := range v.local { // the source node has no record
			if v.extra(le) {
				if err := v.queue([]byte(k)); err != nil {
					return err
				}
			}
		}
		if err := v.comparePeers(sub, remote); err != nil {
			return err
		}
		if sub.end == nil || r.end != nil && bytes.Equal(sub.end, r.end) {
			return nil
		}
		start = sub.end
	}
}

// listReq is a verifyList request for range r.
func listReq(r keyRange) []byte {
	return binary.BigEndian.AppendUint32(appendKeyRange([]byte{verifyList}, r), verifyListMax)
}

// differs reports whether a replica's record (le, held: it has one) of a
// key the source node listed as re is a candidate: it differs, its tag is
// not above the bound (a newer write, left to the forked flows and the
// next incremental pass), and one of the two is in the one order (a
// record written before the DC was sequenced, or into one DC only, as the
// testbed's per-DC marker, may differ between DCs by design).
func (v *verifier) differs(re, le listEntry, held bool) bool {
	if held && (le.tag.Compare(v.bound) > 0 || le.tag == re.tag && le.flags == re.flags && le.sum == re.sum) {
		return false
	}
	return re.tag.IsStamped() || held && le.tag.IsStamped()
}

// extra reports whether a replica's record of a key the source node did
// not list is a candidate: in the one order, at or below the bound.
func (v *verifier) extra(le listEntry) bool {
	return le.tag.Compare(v.bound) <= 0 && le.tag.IsStamped()
}

// queue adds key to the next fetch (once), fetching when it is full.
func (v *verifier) queue(key []byte) error {
	if v.queued[string(key)] {
		return nil
	}
	v.queued[string(key)] = true
	v.fetch = append(v.fetch, append([]byte(nil), key...))
	if len(v.fetch) >= v.n.fetchKeys() {
		return v.flush()
	}
	return nil
}

// flush fetches the queued keys' quorum records from the source DC and
// writes those that differ from the local record as repairs.
func (v *verifier) flush() error {
	if len(v.fetch) == 0 {
		return nil
	}
	req := []byte{verifyFetch}
	for _, k := range v.fetch {
		req = binary.BigEndian.AppendUint16(req, uint16(len(k)))
		req = append(req, k...)
	}
	v.fetch = v.fetch[:0]
	defer clear(v.force)
	clear(v.queued)
	ans, err := v.roundTrips([][]byte{req})
	if err != nil {
		return err
	}
	a := ans[0]
	if _, err := v.n.checkBatch(a.val, true); err != nil {
		return fmt.Errorf("verify fetch: %w", err)
	}
	// Keep the records that differ from the local one.
	var batch []byte
	count := 0
	var rec scanRecord
	for b := a.val; len(b) > 0; {
		next, _ := nextScanRecord(b, &rec)
		t, flags, val, err := v.n.store.Get(rec.key, true, nil)
		if err != nil {
			return fmt.Errorf("%w: local read: %v", errCatchupLocal, err)
		}
		if v.force[string(rec.key)] || t != rec.tag || flags != rec.flags || !bytes.Equal(val, rec.val) {
			batch = append(batch, b[:len(b)-len(next)]...)
			count++
		}
		b = next
	}
	if count == 0 {
		return nil
	}
	if err := v.n.applyRecords(v.ctx, batch, v.bound, v.pace); err != nil {
		return err
	}
	v.n.catchStats.VerifyRepaired.Add(uint64(count))
	return nil
}

// verifyJob runs j's verify pass, moving to the source DC's next node when
// one fails (the comparison starts over there).
func (n *Node) verifyJob(ctx context.Context, j *catchupJob) error {
	addrs := n.cfg.Remotes[j.source]
	pace := n.newCatchupPace()
	n.catchStats.Verifies.Add(1)
	var errs []error
	for i := range addrs {
		addr := addrs[(j.srcIdx+i)%len(addrs)]
		err := n.verifyFrom(ctx, j, addr, pace)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, errCatchupLocal) {
			return err
		}
		n.catchStats.Failures.Add(1)
		n.log.Warn("catch-up: verify against a source node failed; trying the next one", "job", j.id, "source", addr, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return fmt.Errorf("verify: every node of DC %q failed: %w", j.source, errors.Join(errs...))
}

// verifyFrom runs the verify pass against one source node, on the parked
// connection if it goes there, and parks the connection after.
func (n *Node) verifyFrom(ctx context.Context, j *catchupJob, addr string, pace *catchupPace) error {
	cc := n.takeCatchupConn(addr)
	if cc == nil {
		c, err := n.dialCatchup(ctx, addr, nil)
		if err != nil {
			return err
		}
		cc = &catchupConn{addr: addr, c: c, fr: newFrameReader(c, maxCatchupFrame), nextID: 1}
	}
	stop := context.AfterFunc(ctx, func() { cc.c.Close() })
	start := time.Now()
	before := n.catchStats.VerifyRepaired.Load()
	v := &verifier{n: n, ctx: ctx, cc: cc, bound: boundTag(j.bound), pace: pace, local: map[string]listEntry{}, force: map[string]bool{}, queued: map[string]bool{}}
	v.dialPeers()
	defer v.closePeers()
	err := v.run()
	if !stop() || err != nil {
		cc.c.Close()
		return err
	}
	cc.c.SetDeadline(time.Time{})
	n.parkCatchupConn(cc)
	n.log.Info("catch-up: verify done", "job", j.id, "source", addr, "bound_g", j.bound,
		"repaired", n.catchStats.VerifyRepaired.Load()-before, "took", time.Since(start))
	return nil
}
