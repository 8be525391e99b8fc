package kvs

// Divergence scan, client side (`sdnkvs kvs diff`): compares two DCs, each
// given as the list of its nodes' RESP addresses. A DC's record of a key is
// the max-tag record over its nodes (what a quorum read converges to). The
// scan works on key ranges:
//
//	range [s, e): DIGEST on every node of both DCs
//	  all equal                      -> identical, skip
//	  at most Page records per node  -> SCAN every node, merge, compare key by key
//	  else                           -> cut at the split key of the fullest node, recurse
//
// Memory is bounded by the ranges pending (depth-first, one path) and one
// page per node; values never leave the nodes (records carry a value digest).

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DiffOptions configure Diff.
type DiffOptions struct {
	A, B     []string // RESP addresses of each DC's nodes
	Password string   // RESP AUTH password of the nodes
	Page     int      // records per SCAN page; default 1000
}

// DiffRecord is one DC's record of a key: Present is false if no node of
// the DC holds the key (not even a tombstone).
type DiffRecord struct {
	Present  bool
	Tag      Tag
	Deleted  bool
	ValueSum string // hex of the value digest's first 16 bytes
}

func (r DiffRecord) String() string {
	switch {
	case !r.Present:
		return "absent"
	case r.Deleted:
		return "deleted@" + formatTag(r.Tag)
	}
	return "value " + r.ValueSum[:12] + "@" + formatTag(r.Tag)
}

// KeyDiff is a key whose DCs' records differ.
type KeyDiff struct {
	Key  []byte
	A, B DiffRecord
}

// DiffStats summarise a scan.
type DiffStats struct {
	Ranges    int // ranges compared by digest
	Scanned   int // ranges compared record by record
	Records   int // records read by scans (all nodes)
	Differing int
}

type diffNode struct {
	addr string
	rc   *redis.Client
}

// Diff compares DC A with DC B and calls report for every key whose records
// differ, in key order.
func Diff(ctx context.Context, o DiffOptions, report func(KeyDiff)) (DiffStats, error) {
	var st DiffStats
	if len(o.A) == 0 || len(o.B) == 0 {
		return st, fmt.Errorf("kvs diff: each DC needs at least one node")
	}
	if o.Page <= 0 {
		o.Page = 1000
	}
	o.Page = min(o.Page, MaxScanLimit)
	dial := func(addrs []string) []diffNode {
		var ns []diffNode
		for _, a := range addrs {
			ns = append(ns, diffNode{a, redis.NewClient(&redis.Options{Addr: a, Password: o.Password,
				MaxRetries: 1, PoolSize: 1, DisableIdentity: true, Protocol: 2})})
		}
		return ns
	}
	a, b := dial(o.A), dial(o.B)
	defer func() {
		for _, n := range append(a, b...) {
			n.rc.Close()
		}
	}()
	all := append(append([]diffNode{}, a...), b...)
	type rng struct{ start, end []byte } // end nil: unbounded
	stack := []rng{{start: []byte{}}}
	for len(stack) > 0 {
		r := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		st.Ranges++
		var first string
		same, most, split := true, -1, []byte(nil)
		for i, n := range all {
			res, err := n.rc.Do(ctx, "SDNKVS.DIGEST", r.start, endArg(r.end)).Slice()
			if err != nil {
				return st, fmt.Errorf("kvs diff: %s: DIGEST: %w", n.addr, err)
			}
			if len(res) != 3 {
				return st, fmt.Errorf("kvs diff: %s: DIGEST answered %d fields", n.addr, len(res))
			}
			count, _ := res[0].(int64)
			d, _ := res[1].(string)
			if i == 0 {
				first = d
			} else if d != first {
				same = false
			}
			if int(count) > most {
				most = int(count)
				split = nil
				if s, ok := res[2].(string); ok {
					split = []byte(s)
				}
			}
		}
		if same {
			continue
		}
		if most <= o.Page || split == nil || bytes.Compare(split, r.start) <= 0 {
			st.Scanned++
			if err := scanCompare(ctx, a, b, r.start, r.end, o.Page, &st, report); err != nil {
				return st, err
			}
			continue
		}
		// Depth first, left half on top: keys are reported in order.
		stack = append(stack, rng{split, r.end}, rng{r.start, split})
	}
	return st, nil
}

func endArg(end []byte) []byte {
	if end == nil {
		return []byte{}
	}
	return end
}

// nodeCursor pages through one node's records of a range.
type nodeCursor struct {
	n    diffNode
	next []byte // where the next page starts
	end  []byte
	buf  []scanRec
	done bool
}

type scanRec struct {
	key []byte
	rec DiffRecord
}

func (c *nodeCursor) peek(ctx context.Context, page int, st *DiffStats) (*scanRec, error) {
	if len(c.buf) > 0 {
		return &c.buf[0], nil
	}
	if c.done {
		return nil, nil
	}
	res, err := c.n.rc.Do(ctx, "SDNKVS.SCAN", c.next, endArg(c.end), page).Slice()
	if err != nil {
		return nil, fmt.Errorf("kvs diff: %s: SCAN: %w", c.n.addr, err)
	}
	for _, x := range res {
		f, ok := x.([]any)
		if !ok || len(f) != 4 {
			return nil, fmt.Errorf("kvs diff: %s: malformed SCAN record", c.n.addr)
		}
		key, _ := f[0].(string)
		tag, _ := f[1].(string)
		flags, _ := f[2].(int64)
		sum, _ := f[3].(string)
		t, err := parseTag(tag)
		if err != nil || len(sum) != 32 {
			return nil, fmt.Errorf("kvs diff: %s: malformed SCAN record %q", c.n.addr, tag)
		}
		c.buf = append(c.buf, scanRec{[]byte(key), DiffRecord{Present: true, Tag: t, Deleted: byte(flags)&flagTombstone != 0, ValueSum: sum}})
	}
	st.Records += len(res)
	if len(res) < page {
		c.done = true
	} else {
		c.next = append(append([]byte{}, c.buf[len(c.buf)-1].key...), 0)
	}
	if len(c.buf) == 0 {
		return nil, nil
	}
	return &c.buf[0], nil
}

func (c *nodeCursor) pop() { c.buf = c.buf[1:] }

func parseTag(s string) (Tag, error) {
	c, w, ok := strings.Cut(s, ":")
	if !ok {
		return Tag{}, fmt.Errorf("bad tag %q", s)
	}
	cn, err1 := strconv.ParseUint(c, 10, 64)
	wn, err2 := strconv.ParseUint(w, 16, 64)
	if err1 != nil || err2 != nil {
		return Tag{}, fmt.Errorf("bad tag %q", s)
	}
	return Tag{cn, wn}, nil
}

// dcStream merges a DC's node cursors into its max-tag record per key.
type dcStream struct{ cs []*nodeCursor }

// next returns the DC's smallest remaining key and its record (nil key at
// the end).
func (d *dcStream) peekKey(ctx context.Context, page int, st *DiffStats) ([]byte, error) {
	var min []byte
	for _, c := range d.cs {
		r, err := c.peek(ctx, page, st)
		if err != nil {
			return nil, err
		}
		if r != nil && (min == nil || bytes.Compare(r.key, min) < 0) {
			min = r.key
		}
	}
	return min, nil
}

// take consumes key from every node and returns the max-tag record.
func (d *dcStream) take(key []byte) DiffRecord {
	var best DiffRecord
	for _, c := range d.cs {
		if len(c.buf) > 0 && bytes.Equal(c.buf[0].key, key) {
			if r := c.buf[0].rec; !best.Present || r.Tag.Compare(best.Tag) > 0 {
				best = r
			}
			c.pop()
		}
	}
	return best
}

func scanCompare(ctx context.Context, a, b []diffNode, start, end []byte, page int, st *DiffStats, report func(KeyDiff)) error {
	mk := func(ns []diffNode) *dcStream {
		d := &dcStream{}
		for _, n := range ns {
			d.cs = append(d.cs, &nodeCursor{n: n, next: start, end: end})
		}
		return d
	}
	da, db := mk(a), mk(b)
	for {
		ka, err := da.peekKey(ctx, page, st)
		if err != nil {
			return err
		}
		kb, err := db.peekKey(ctx, page, st)
		if err != nil {
			return err
		}
		if ka == nil && kb == nil {
			return nil
		}
		var key []byte
		switch {
		case kb == nil || ka != nil && bytes.Compare(ka, kb) < 0:
			key = ka
		default:
			key = kb
		}
		key = append([]byte(nil), key...)
		ra, rb := da.take(key), db.take(key)
		if ra != rb {
			st.Differing++
			report(KeyDiff{Key: key, A: ra, B: rb})
		}
	}
}
