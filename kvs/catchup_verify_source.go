package kvs

// Verify pass, source side (docs/design-lifecycle.md, "Verify pass"): three
// stateless requests on the catch-up stream of a dc-reader connection, so
// a joining DC's driver can compare its store with this DC's by key ranges
// without pulling values, and read the records it must repair.
//
//	verifyDigest(range)      -> count | SHA-256 of the range's records | middle key
//	verifyList(range, limit) -> [key, tag, flags, value sum] in key order (flagScanMore if cut)
//	verifyFetch(keys)        -> each key's record at this DC's read quorum (Scan format;
//	                            zero tag, no flags, empty value: no record on the quorum)
//
// Digests and lists are this node's store (the same as SDNKVS.DIGEST and
// SDNKVS.SCAN, seq_diff.go): a difference is only a hint. What a repair
// writes comes from verifyFetch, the highest record among a read quorum of
// this DC, which holds every record the DC acknowledged.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Verify ops (first payload byte of kindCatchup, after catchup_source.go's).
const (
	verifyDigest byte = 4 // range
	verifyList   byte = 5 // range | limit u32
	verifyFetch  byte = 6 // (key len u16 | key)*
)

// Limits of the verify requests.
const (
	verifyListMax  = 4096 // records per list answer
	verifyFetchMax = 256  // keys per fetch
)

// keyRange is [start, end) of client keys; end nil: unbounded.
type keyRange struct{ start, end []byte }

func appendKeyRange(b []byte, r keyRange) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.start)))
	b = append(b, r.start...)
	if r.end == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.end)))
	return append(b, r.end...)
}

// parseKeyRange decodes a range and returns the rest of b.
func parseKeyRange(b []byte) (keyRange, []byte, error) {
	var r keyRange
	if len(b) < 3 {
		return r, nil, errBadFrame
	}
	l := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+l+1 {
		return r, nil, errBadFrame
	}
	r.start = b[2 : 2+l]
	b = b[2+l:]
	hasEnd := b[0]
	b = b[1:]
	switch hasEnd {
	case 0:
		return r, b, nil
	case 1:
		if len(b) < 2 {
			return r, nil, errBadFrame
		}
		l = int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return r, nil, errBadFrame
		}
		r.end = b[2 : 2+l : 2+l]
		return r, b[2+l:], nil
	}
	return r, nil, errBadFrame
}

// listEntry is one record of a verify list: no value, its sum.
type listEntry struct {
	key   []byte
	tag   Tag
	flags byte
	sum   [16]byte
}

func appendListEntry(b []byte, e *listEntry) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.key)))
	b = append(b, e.key...)
	b = AppendTag(b, e.tag)
	b = append(b, e.flags)
	return append(b, e.sum[:]...)
}

// parseList decodes a verify list (keys copied), checking key order.
func parseList(b []byte) ([]listEntry, error) {
	var out []listEntry
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errBadFrame
		}
		kl := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+kl+recordHeader+16 {
			return nil, errBadFrame
		}
		e := listEntry{key: append([]byte(nil), b[2:2+kl]...)}
		b = b[2+kl:]
		e.tag, e.flags = DecodeTag(b), b[TagSize]
		copy(e.sum[:], b[recordHeader:])
		b = b[recordHeader+16:]
		if n := len(out); n > 0 && string(out[n-1].key) >= string(e.key) {
			return nil, errors.New("list not in key order")
		}
		out = append(out, e)
	}
	return out, nil
}

// listRange calls fn for up to limit records of r in key order from s;
// more reports whether records remain after them.
func (s *Store) listRange(r keyRange, limit int, fn func(e *listEntry)) (more bool, err error) {
	n := 0
	err = s.scanRecords(r.start, r.end, true, func(key []byte, t Tag, flags byte, val []byte) bool {
		if n == limit {
			more = true
			return false
		}
		e := listEntry{key: key, tag: t, flags: flags, sum: valueSum(val)}
		fn(&e)
		n++
		return true
	})
	return more, err
}

// serveVerify answers the verify ops (status, flags, value).
func (n *Node) serveVerify(payload, dst []byte) (byte, byte, []byte) {
	n.catchStats.VerifyServed.Add(1)
	bad := func(what string) (byte, byte, []byte) {
		return statusErr, 0, append(dst, "verify: "+what...)
	}
	if payload[0] != verifyFetch && !n.voter.Load() {
		// A learner's store is being copied from its peers (a wiped or
		// new node): comparing it would repair every key it lacks yet
		// through the DC's quorum, records fetched over the WAN. It
		// refuses; a verify pass leaves it out (a DC peer) or moves to the
		// next node (a source). A fetch reads the DC's quorum, not this
		// store, and is served.
		return statusLearner, 0, append(dst, "verify: this node is a learner (its store is being synced from its peers)"...)
	}
	switch payload[0] {
	case verifyDigest:
		r, rest, err := parseKeyRange(payload[1:])
		if err != nil || len(rest) != 0 {
			return bad("malformed digest request")
		}
		count, digest, split, err := n.store.rangeDigest(r.start, r.end)
		if err != nil {
			return bad("storage: " + err.Error())
		}
		out := binary.BigEndian.AppendUint64(dst, uint64(count))
		out = append(out, digest[:]...)
		return statusOK, 0, append(out, split...)
	case verifyList:
		r, rest, err := parseKeyRange(payload[1:])
		if err != nil || len(rest) != 4 {
			return bad("malformed list request")
		}
		limit := int(binary.BigEndian.Uint32(rest))
		if limit < 1 || limit > verifyListMax {
			return bad(fmt.Sprintf("list limit %d out of range 1..%d", limit, verifyListMax))
		}
		out := dst
		more, err := n.store.listRange(r, limit, func(e *listEntry) { out = appendListEntry(out, e) })
		if err != nil {
			return bad("storage: " + err.Error())
		}
		var f byte
		if more {
			f = flagScanMore
		}
		return statusOK, f, out
	case verifyFetch:
		var keys [][]byte
		for b := payload[1:]; len(b) > 0; {
			if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
				return bad("malformed fetch request")
			}
			kl := int(binary.BigEndian.Uint16(b))
			keys, b = append(keys, b[2:2+kl]), b[2+kl:]
		}
		if len(keys) == 0 || len(keys) > verifyFetchMax {
			return bad(fmt.Sprintf("fetch of %d keys, want 1..%d", len(keys), verifyFetchMax))
		}
		out := dst
		for _, k := range keys {
			t, flags, v, err := n.quorumRecord(k)
			if err != nil {
				return bad(err.Error())
			}
			out = appendScanRecord(out, k, t, flags, v)
			if len(out)-len(dst) > maxCatchupFrame-1024 {
				return bad("fetch answer too large")
			}
		}
		return statusOK, 0, out
	}
	return bad("unknown op")
}

// quorumRecord returns the highest record of key among a read quorum of
// this DC's voters (this node included if it votes); the zero tag when
// none holds it. It fails below a quorum of answers.
func (n *Node) quorumRecord(key []byte) (Tag, byte, []byte, error) {
	type ans struct {
		t     Tag
		flags byte
		v     []byte
	}
	var mu sync.Mutex
	var got []ans
	var wg sync.WaitGroup
	for _, p := range n.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := p.call(kindRead, key, changesCallTimeout)
			if err != nil || r.status != statusOK || n.checkTag(r.tag) != nil {
				return
			}
			mu.Lock()
			got = append(got, ans{r.tag, r.flags, r.val})
			mu.Unlock()
		}()
	}
	if n.voter.Load() {
		t, flags, v, err := n.store.Get(key, true, nil)
		if err == nil {
			mu.Lock()
			got = append(got, ans{t, flags, v})
			mu.Unlock()
		}
	}
	wg.Wait()
	if len(got) < n.quorum {
		return Tag{}, 0, nil, fmt.Errorf("only %d of the source DC's %d nodes answered a read, a read quorum is %d", len(got), n.size, n.quorum)
	}
	best := got[0]
	for _, a := range got[1:] {
		if a.t.Compare(best.t) > 0 {
			best = a
		}
	}
	if best.t.IsZero() {
		return Tag{}, 0, nil, nil
	}
	return best.t, best.flags, best.v, nil
}
