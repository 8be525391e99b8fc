package kvs

// Catch-up, source side (docs/design-lifecycle.md, "Store side"): a node of
// a current DC serves "every record with tag above a cursor, in tag order,
// one bounded page at a time" to the driver of a joining DC.
//
//	driver --kindCatchup start(cursor, limits) / next--> serving node S
//	                                                    | kindChanges (LAN) to its DC peers
//	                                                    | merge the index pages of a read quorum
//	                                                    | records: own store, else the peer listing it
//	driver <--page: end cursor | remaining | records-----
//
// A single node may have missed a write that a quorum acknowledged, so S
// merges its own change index with its peers' up to the lowest last tag
// of any truncated index page (the horizon): every key whose record is on a
// write quorum is listed by some node of any read quorum with a tag at
// least the record's. Values cross the WAN once.
//
// The stream is stateful per connection: "start" fixes the cursor and the
// limits and answers the first page (with the remaining-records estimate),
// each "next" answers the page after the previous one, so a driver keeps
// two requests in flight and the WAN round trip overlaps its local writes.
//
// A start may carry a stub bound B (catchup_stub.go): the records at or
// below B are sent as stubs (key, tag, flags, no value) in pages of their
// own (flagStub), and the pages after B carry values as usual. A driver
// asks for stubs over a range its DC already copied (a later pass of the
// same rejoin), and fetches only the records its DC lacks.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Catch-up stream ops (first payload byte of kindCatchup).
const (
	catchupStart byte = 1 // cursor(16) | max bytes u32 | max records u32 [| stub bound(16)]
	catchupNext  byte = 2
	catchupPing  byte = 3 // keeps a parked stream busy (catchup_conn.go); answers an empty page, the stream unchanged
)

// Limits of the catch-up source.
const (
	// CatchupPageBytes and CatchupPageRecords are a page's default limits
	// (a page may exceed the byte limit by one group of records sharing a
	// tag: one command's keys).
	CatchupPageBytes   = 4 << 20
	CatchupPageRecords = 16384
	maxCatchupPage     = 16 << 20 // limits a driver may ask for
	maxCatchupFrame    = 64 << 20 // largest page frame (driver's reader limit)
	remainingCap       = 1 << 22  // the remaining-records estimate counts at most this many entries
	changesCallTimeout = 5 * time.Second
)

// catchupStream is one connection's stream state.
type catchupStream struct {
	started  bool
	cursor   Tag
	maxBytes int
	maxRecs  int
	stubTo   Tag // records at or below it go as stubs (zero: none)
}

// serveCatchup answers one kindCatchup request: status, flags, value.
func (n *Node) serveCatchup(cs *catchupStream, payload, dst []byte) (byte, byte, []byte) {
	if len(payload) > 0 && payload[0] >= verifyDigest && payload[0] <= verifyFetch {
		return n.serveVerify(payload, dst) // catchup_verify_source.go
	}
	first := false
	switch {
	case (len(payload) == 1+TagSize+8 || len(payload) == 1+2*TagSize+8) && payload[0] == catchupStart:
		mb := int(binary.BigEndian.Uint32(payload[1+TagSize:]))
		mr := int(binary.BigEndian.Uint32(payload[1+TagSize+4:]))
		if mb < 1 || mb > maxCatchupPage || mr < 1 || mr > maxCatchupPage {
			return statusErr, 0, append(dst, fmt.Sprintf("catch-up: page limits %d bytes, %d records out of range 1..%d", mb, mr, maxCatchupPage)...)
		}
		*cs = catchupStream{started: true, cursor: DecodeTag(payload[1:]), maxBytes: mb, maxRecs: mr}
		if len(payload) > 1+TagSize+8 {
			cs.stubTo = DecodeTag(payload[1+TagSize+8:])
		}
		first = true
	case len(payload) == 1 && payload[0] == catchupPing:
		return statusOK, 0, dst
	case len(payload) == 1 && payload[0] == catchupNext:
		if !cs.started {
			return statusErr, 0, append(dst, "catch-up: next before start"...)
		}
	default:
		return statusErr, 0, append(dst, "catch-up: malformed request"...)
	}
	stubs := cs.cursor.Compare(cs.stubTo) < 0
	limit := Tag{}
	if stubs {
		limit = cs.stubTo
	}
	out, end, tail, err := n.catchupPage(cs.cursor, cs.maxBytes, cs.maxRecs, first, limit, dst)
	if err != nil {
		n.catchStats.ServeErrors.Add(1)
		return statusErr, 0, append(dst, "catch-up: "+err.Error()...)
	}
	cs.cursor = end
	n.catchStats.ServedPages.Add(1)
	var f byte
	if tail {
		f = flagTail
	}
	if stubs {
		f |= flagStub
	}
	return statusOK, f, out
}

// idxList is one node's index page: entries in tag order, and whether the
// node has entries beyond them.
type idxList struct {
	entries []changeEntry // keys owned
	more    bool
	peer    *peerClient // nil: this node
}

// catchupPage builds the merged page above cursor: out = end cursor(16) |
// remaining u64 | records (Scan format). remaining is ^0 unless first. A
// non-zero stubTo (above cursor) makes it a stub page: only records at or
// below stubTo, without their values, and never the tail.
func (n *Node) catchupPage(cursor Tag, maxBytes, maxRecs int, first bool, stubTo Tag, dst []byte) (out []byte, end Tag, tail bool, err error) {
	lists, err := n.readQuorumChanges(cursor, maxRecs)
	if err != nil {
		return dst, cursor, false, err
	}
	// The horizon: entries up to the lowest last tag of a truncated list
	// are complete in every list (lists never split a group of equal tags).
	horizon, bounded := Tag{}, false
	for _, l := range lists {
		if l.more && len(l.entries) > 0 {
			last := l.entries[len(l.entries)-1].tag
			if !bounded || last.Compare(horizon) < 0 {
				horizon, bounded = last, true
			}
		}
	}
	stubs := !stubTo.IsZero()
	if stubs && (!bounded || stubTo.Compare(horizon) < 0) {
		// A stub page ends at the stub bound at the latest: the pages
		// after it carry values.
		horizon, bounded = stubTo, true
	}
	// Union, newest entry per key, in tag order.
	type pick struct {
		e   *changeEntry
		src *peerClient
	}
	best := map[string]pick{}
	for _, l := range lists {
		for i := range l.entries {
			e := &l.entries[i]
			if bounded && e.tag.Compare(horizon) > 0 {
				break
			}
			// Newest tag; on a tie this node's own entry, whose inline
			// value saves a point read.
			if p, ok := best[string(e.key)]; !ok || e.tag.Compare(p.e.tag) > 0 || (e.tag == p.e.tag && l.peer == nil) {
				best[string(e.key)] = pick{e, l.peer}
			}
		}
	}
	picks := make([]pick, 0, len(best))
	for _, p := range best {
		picks = append(picks, p)
	}
	slices.SortFunc(picks, func(a, b pick) int {
		if c := a.e.tag.Compare(b.e.tag); c != 0 {
			return c
		}
		return bytes.Compare(a.e.key, b.e.key)
	})
	// Cut the page at a tag boundary once a limit is reached.
	cut, size := len(picks), 0
	for i, p := range picks {
		if i > 0 && p.e.tag != picks[i-1].e.tag && (size >= maxBytes || i >= maxRecs) {
			cut = i
			break
		}
		size += 2 + len(p.e.key) + recordHeader + 4
		if !stubs {
			size += p.e.vlen
		}
	}
	switch {
	case cut < len(picks):
		end, tail = picks[cut-1].e.tag, false
	case bounded:
		end, tail = horizon, false
	case len(picks) > 0:
		end, tail = picks[len(picks)-1].e.tag, true
	default:
		end, tail = cursor, true
	}
	remaining := ^uint64(0)
	if first {
		if c, err := n.store.countChangesAfter(cursor, remainingCap); err == nil {
			remaining = uint64(c)
		}
	}
	out = AppendTag(dst, end)
	out = binary.BigEndian.AppendUint64(out, remaining)
	if stubs {
		// The merged index holds what a stub carries: the newest tag a
		// read quorum lists for the key, and its flags.
		for _, p := range picks[:cut] {
			out = appendScanRecord(out, p.e.key, p.e.tag, p.e.flags, nil)
		}
		n.catchStats.ServedStubs.Add(uint64(cut))
		return out, end, false, nil
	}
	// A small record this node's own index listed comes with its value
	// (store_changes.go). Read the others in key order (nearby keys share
	// Badger blocks, so most reads find their block just decompressed),
	// then emit them in tag order. Memory: the page's values twice (here
	// and in out).
	type got struct {
		t         Tag
		flags     byte
		off, vlen int
	}
	recs := make([]got, cut)
	var arena []byte
	order := make([]int, 0, cut)
	for i, p := range picks[:cut] {
		if p.src == nil && p.e.inline {
			recs[i] = got{p.e.tag, p.e.flags, len(arena), len(p.e.val)}
			arena = append(arena, p.e.val...)
			continue
		}
		order = append(order, i)
	}
	n.catchStats.ServedInline.Add(uint64(cut - len(order)))
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(picks[a].e.key, picks[b].e.key) })
	keys := make([][]byte, len(order))
	for j, i := range order {
		keys[j] = picks[i].e.key
	}
	var perr error // a failure that is not the local store's
	err = n.store.getMany(keys, true, func(j int, t Tag, flags byte, v []byte) error {
		i := order[j]
		p := picks[i]
		if t.Compare(p.e.tag) < 0 {
			// This node missed it: read it from the node that listed it
			// (replicas never go back, so it holds that tag or a newer one).
			if p.src == nil {
				perr = errors.New("local record older than its own index entry")
				return errStopGetMany
			}
			r, err := p.src.call(kindRead, p.e.key, changesCallTimeout)
			if err != nil || r.status != statusOK {
				perr = fmt.Errorf("read of a record this node lacks from peer %s failed: %v (status %d)", p.src.addr, err, r.status)
				return errStopGetMany
			}
			if err := n.checkTag(r.tag); err != nil || r.tag.Compare(p.e.tag) < 0 {
				perr = fmt.Errorf("peer %s answered tag %v for an index entry at %v (%v)", p.src.addr, r.tag, p.e.tag, err)
				return errStopGetMany
			}
			t, flags, v = r.tag, r.flags, r.val
			n.catchStats.ServedFromPeers.Add(1)
		}
		recs[i] = got{t, flags, len(arena), len(v)}
		arena = append(arena, v...)
		if len(arena) > maxCatchupFrame-1024 {
			perr = fmt.Errorf("page over %d bytes (one command's keys share a tag and cannot be split)", maxCatchupFrame)
			return errStopGetMany
		}
		return nil
	})
	if perr != nil {
		return dst, cursor, false, perr
	}
	if err != nil {
		return dst, cursor, false, fmt.Errorf("local read: %w", err)
	}
	for i, p := range picks[:cut] {
		r := &recs[i]
		out = appendScanRecord(out, p.e.key, r.t, r.flags, arena[r.off:r.off+r.vlen])
		if len(out)-len(dst) > maxCatchupFrame-1024 {
			return dst, cursor, false, fmt.Errorf("page over %d bytes (one command's keys share a tag and cannot be split)", maxCatchupFrame)
		}
	}
	n.catchStats.ServedRecords.Add(uint64(cut))
	return out, end, tail, nil
}

// readQuorumChanges collects index pages above cursor from this node (if it
// votes) and every voting peer that answers; it fails below a quorum.
func (n *Node) readQuorumChanges(cursor Tag, maxRecs int) ([]idxList, error) {
	var mu sync.Mutex
	var lists []idxList
	var wg sync.WaitGroup
	payload := binary.BigEndian.AppendUint32(AppendTag(nil, cursor), uint32(maxRecs))
	for _, p := range n.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := p.call(kindChanges, payload, changesCallTimeout)
			if err != nil || r.status != statusOK {
				return
			}
			l, err := parseChanges(r.val)
			if err != nil {
				n.log.Warn("catch-up: malformed change list from peer", "peer", p.addr, "err", err)
				return
			}
			l.more, l.peer = r.flags&flagScanMore != 0, p
			mu.Lock()
			lists = append(lists, l)
			mu.Unlock()
		}()
	}
	if n.voter.Load() {
		var own idxList
		more, err := n.store.changesAfter(cursor, maxRecs, func(e *changeEntry) bool {
			c := *e
			c.key = append([]byte(nil), e.key...)
			if c.inline {
				c.val = append([]byte(nil), e.val...)
			} else {
				c.val = nil
			}
			own.entries = append(own.entries, c)
			return true
		})
		if err == nil {
			own.more = more
			mu.Lock()
			lists = append(lists, own)
			mu.Unlock()
		}
	}
	wg.Wait()
	if len(lists) < n.quorum {
		return nil, fmt.Errorf("only %d of the source DC's %d nodes answered with their change index, a read quorum is %d", len(lists), n.size, n.quorum)
	}
	return lists, nil
}

// serveChanges answers kindChanges (a DC peer merging a catch-up page).
func (n *Node) serveChanges(payload, dst []byte) (byte, byte, []byte) {
	if len(payload) != TagSize+4 {
		return statusErr, 0, dst
	}
	if !n.voter.Load() {
		return statusLearner, 0, dst
	}
	maxRecs := int(binary.BigEndian.Uint32(payload[TagSize:]))
	if maxRecs < 1 || maxRecs > maxCatchupPage {
		return statusErr, 0, dst
	}
	out := dst
	more, err := n.store.changesAfter(DecodeTag(payload), maxRecs, func(e *changeEntry) bool {
		out = AppendTag(out, e.tag)
		out = append(out, e.flags)
		out = binary.BigEndian.AppendUint32(out, uint32(e.vlen))
		out = binary.BigEndian.AppendUint16(out, uint16(len(e.key)))
		out = append(out, e.key...)
		return true
	})
	if err != nil {
		return statusErr, 0, dst
	}
	var f byte
	if more {
		f = flagScanMore
	}
	return statusOK, f, out
}

// parseChanges decodes a kindChanges answer (keys copied).
func parseChanges(b []byte) (idxList, error) {
	var l idxList
	for len(b) > 0 {
		if len(b) < TagSize+1+4+2 {
			return l, errBadFrame
		}
		var e changeEntry
		e.tag, e.flags = DecodeTag(b), b[TagSize]
		e.vlen = int(binary.BigEndian.Uint32(b[TagSize+1:]))
		kl := int(binary.BigEndian.Uint16(b[TagSize+5:]))
		b = b[TagSize+7:]
		if len(b) < kl {
			return l, errBadFrame
		}
		e.key = append([]byte(nil), b[:kl]...)
		b = b[kl:]
		if n := len(l.entries); n > 0 && e.tag.Compare(l.entries[n-1].tag) < 0 {
			return l, errors.New("entries out of tag order")
		}
		l.entries = append(l.entries, e)
	}
	return l, nil
}
