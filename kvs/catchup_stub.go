package kvs

// Catch-up, stub pages (docs/design-lifecycle.md, "Later passes"): a
// rejoin runs several passes, and each starts --rejoin-margin behind the
// clock at the previous pass's start (a record stamped in that margin may
// have reached the source after the scan passed it). Before stubs, a later
// pass copied every value of the margin again: in bench rejoin, a DC that
// missed 64 MiB of 64 KiB values pulled them twice.
//
// A driver remembers the tag range its passes copied to its DC's quorum
// (catchupCover, in memory: a restarted node copies in full). A pass whose
// cursor lies in that range asks for stubs up to its top: the source sends
// those records as (key, tag, flags) without values. The driver asks every
// replica of its DC for its tag of each key (kindTags, on the LAN) and
// fetches from the source (verifyFetch: the source DC's quorum record)
// only the records fewer than a write quorum of its DC hold at the stub's
// tag or a newer one; it writes them as any copied record (the higher tag
// wins). The range is only a hint: every stub is checked against the
// replicas, so a wrong range costs fetches, never a missed record.
//
//	driver ── start(cursor, ..., stub bound) ─────────────► source
//	       ◄─ stub page: (key, tag, flags)* ───────────────
//	       ── kindTags(keys) to each DC peer, own store ──► count tags >= stub's
//	       ── verifyFetch(keys short of a quorum) ────────► source
//	       ◄─ their quorum records ─────────────────────── write at the DC's quorum
//
// Cost: a later pass moves keys and tags over the WAN instead of values,
// and reads tags instead of writing records in its DC.

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

const (
	// stubTagsChunk bounds the keys of one kindTags request: a peer
	// reads their tags in its connection's serving loop, so live writes
	// on that connection wait for at most one chunk of reads.
	stubTagsChunk = 512
)

// catchupCover is the tag range (lo, hi] this node's passes copied to its
// DC's quorum, each record with the source's tag or a newer one.
type catchupCover struct {
	mu     sync.Mutex
	set    bool
	lo, hi Tag
}

// stubBound is the bound up to which a pass from cursor asks for stubs
// (zero: none).
func (c *catchupCover) stubBound(cursor Tag) Tag {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set && c.lo.Compare(cursor) <= 0 && cursor.Compare(c.hi) < 0 {
		return c.hi
	}
	return Tag{}
}

// note records that a pass that started at base copied everything up to
// end: joined with the range when they touch, else replacing it.
func (c *catchupCover) note(base, end Tag) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if end.Compare(base) < 0 {
		return
	}
	if c.set && base.Compare(c.hi) <= 0 && end.Compare(c.lo) >= 0 {
		c.lo, c.hi = minTagOf(c.lo, base), maxTagOf(c.hi, end)
		return
	}
	c.lo, c.hi, c.set = base, end, true
}

func minTagOf(a, b Tag) Tag {
	if a.Compare(b) <= 0 {
		return a
	}
	return b
}

func maxTagOf(a, b Tag) Tag {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}

// appendKeyList appends keys as (len u16 | key)*.
func appendKeyList(b []byte, keys [][]byte) []byte {
	for _, k := range keys {
		b = binary.BigEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
	}
	return b
}

// parseKeyList decodes (len u16 | key)* (keys alias b).
func parseKeyList(b []byte, maxKey int) ([][]byte, error) {
	var keys [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errBadFrame
		}
		kl := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+kl || kl > maxKey {
			return nil, errBadFrame
		}
		keys, b = append(keys, b[2:2+kl]), b[2+kl:]
	}
	return keys, nil
}

// appendTagsReq appends a kindTags request for keys.
func appendTagsReq(b []byte, id uint64, keys [][]byte) []byte {
	return appendBodyReq(b, kindTags, id, Tag{}, appendKeyList(nil, keys))
}

// serveTags answers a DC peer's kindTags with this replica's tag of each
// key (zero: no record); a learner's answer does not count. It returns
// false for a malformed request (the caller drops the connection).
func (n *Node) serveTags(id uint64, b []byte, sc *serverConn) bool {
	keys, err := parseKeyList(b, n.cfg.MaxKey)
	if err != nil || len(keys) == 0 || len(keys) > stubTagsChunk {
		return false
	}
	st := statusOK
	out := make([]byte, 0, len(keys)*TagSize)
	if !n.voter.Load() {
		st, out = statusLearner, out[:0]
	} else if err := n.store.getMany(keys, false, func(_ int, t Tag, _ byte, _ []byte) error {
		out = AppendTag(out, t)
		return nil
	}); err != nil {
		st, out = statusErr, out[:0]
	}
	buf, live := sc.w.lock()
	if !live {
		return true
	}
	sc.w.unlock(appendResp(buf, kindTags, id, st, Tag{}, 0, out))
	return true
}

// stubsLacking returns the stubs (Scan records without values, validated)
// whose record fewer than a write quorum of this DC's voting replicas
// hold at the stub's tag or a newer one; the keys alias b.
func (n *Node) stubsLacking(b []byte) ([][]byte, error) {
	var keys [][]byte
	var tags []Tag
	var rec scanRecord
	for len(b) > 0 {
		var err error
		if b, err = nextScanRecord(b, &rec); err != nil {
			return nil, err
		}
		keys, tags = append(keys, rec.key), append(tags, rec.tag)
	}
	held := make([]int, len(keys))
	type call struct {
		from int
		n    int
		ch   chan response
		done func()
	}
	var calls []call
	for from := 0; from < len(keys); from += stubTagsChunk {
		chunk := keys[from:min(from+stubTagsChunk, len(keys))]
		for _, p := range n.peers {
			ch := make(chan response, 1)
			done, err := p.startCall(ch, func(b []byte, id uint64) []byte { return appendTagsReq(b, id, chunk) })
			if err != nil {
				continue // counts as not holding
			}
			calls = append(calls, call{from, len(chunk), ch, done})
		}
	}
	if n.voter.Load() {
		if err := n.store.getMany(keys, false, func(i int, t Tag, _ byte, _ []byte) error {
			if t.Compare(tags[i]) >= 0 {
				held[i]++
			}
			return nil
		}); err != nil {
			n.log.Warn("catch-up: reading local tags for a stub page failed", "err", err)
		}
	}
	deadline := time.NewTimer(changesCallTimeout)
	defer deadline.Stop()
	timedOut := false
	for _, c := range calls {
		var r response
		got := false
		if !timedOut {
			select {
			case r = <-c.ch:
				got = true
			case <-deadline.C:
				timedOut = true
			case <-n.closing:
				timedOut = true
			}
		}
		c.done()
		if !got || r.status != statusOK || len(r.val) != c.n*TagSize {
			continue
		}
		for i := range c.n {
			if DecodeTag(r.val[i*TagSize:]).Compare(tags[c.from+i]) >= 0 {
				held[c.from+i]++
			}
		}
	}
	var lacking [][]byte
	for i, k := range keys {
		if held[i] < n.quorum {
			lacking = append(lacking, k)
		}
	}
	return lacking, nil
}

// fetchKeys is how many keys one fetch asks for: verifyFetchMax, fewer
// when that many records of this DC's largest size would not fit a
// catch-up frame (the source refuses an answer over it, and a pass whose
// every fetch is refused never ends).
func (n *Node) fetchKeys() int {
	per := n.cfg.MaxKey + n.cfg.MaxValue + 64
	return max(1, min(verifyFetchMax, (maxCatchupFrame*3/4)/per))
}

// appendFetchReq appends a verifyFetch payload for keys.
func appendFetchReq(b []byte, keys [][]byte) []byte {
	return appendKeyList(append(b, verifyFetch), keys)
}

// fetchedRecords checks a verifyFetch answer and returns its records
// without the "no record" entries (a key the source DC no longer holds
// at all: nothing to copy), and their count.
func (n *Node) fetchedRecords(b []byte) ([]byte, int, error) {
	if _, err := n.checkBatch(b, true); err != nil {
		return nil, 0, fmt.Errorf("stub fetch: %w", err)
	}
	var out []byte
	count := 0
	var rec scanRecord
	for len(b) > 0 {
		next, _ := nextScanRecord(b, &rec)
		if !rec.tag.IsZero() {
			out = append(out, b[:len(b)-len(next)]...)
			count++
		}
		b = next
	}
	return out, count, nil
}
