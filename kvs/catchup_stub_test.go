package kvs

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// TestCatchupStubPass: a second pass over a range the first one copied
// gets stubs, not values. It fetches exactly the records fewer than a
// quorum of the joining DC hold: one that reached the source after the
// first pass (a late arrival) and one held by the driver alone. A record
// the driver lacks but both its peers hold is not fetched: the peers'
// tags count. Small pages make the fetches' answers arrive among pages
// asked ahead, and after the tail page.
func TestCatchupStubPass(t *testing.T) {
	a := dcCluster(t, "A", nil, 64<<10, 100, func(c *Config) { c.Cluster = "dc-a" })
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 64<<10, 100, func(c *Config) { c.Cluster = "dc-b" })
	all := []int{0, 1, 2}
	val := strings.Repeat("v", 1024)
	g := uint64(1_000_000)
	for i := range 100 { // written in both DCs
		g += 2
		putOn(t, a, all, fmt.Sprintf("k%04d", i), stampTag(g), val, false)
		putOn(t, b, all, fmt.Sprintf("k%04d", i), stampTag(g), val, false)
	}
	cursor := stampTag(g)
	const missed = 450
	for i := range missed { // only A; even counters, so odd ones are free below
		g += 2
		putOn(t, a, all, fmt.Sprintf("m%04d", i), stampTag(g), val, i%25 == 0)
	}
	pc := dialOrder(t, b.Node(0))
	pc.send(t, catchupFrame(t, 1, cursor, "A"))
	if f := waitJob(t, pc, 1, 60*time.Second); f.State != orderwire.JobDone {
		t.Fatalf("first pass ended in state %d, want done", f.State)
	}
	st := b.Node(0).CatchupStats()
	bytes1, recs1 := st.Bytes.Load(), st.Records.Load()
	if recs1 < missed || st.Stubs.Load() != 0 {
		t.Fatalf("first pass: %d records copied (want >= %d), %d stubs (want 0: nothing was copied before)", recs1, missed, st.Stubs.Load())
	}

	// Inside the copied range: a record that reached A after the first
	// pass scanned its tag, one only B's driver holds, and one only B's
	// two other nodes hold.
	mid := cursor.Counter + missed // odd: no record has this counter
	putOn(t, a, all, "late", stampTag(mid+1), "late-value", false)
	putOn(t, a, all, "driver-only", stampTag(mid+3), "driver-only-value", false)
	putOn(t, b, []int{0}, "driver-only", stampTag(mid+3), "driver-only-value", false)
	putOn(t, a, all, "peers-hold", stampTag(mid+5), "peers-value", false)
	putOn(t, b, []int{1, 2}, "peers-hold", stampTag(mid+5), "peers-value", false)

	pc.send(t, catchupFrame(t, 2, cursor, "A"))
	f := waitJob(t, pc, 2, 60*time.Second)
	if f.State != orderwire.JobDone {
		t.Fatalf("second pass ended in state %d, want done", f.State)
	}
	if got := st.Stubs.Load(); got < missed+3 {
		t.Errorf("second pass checked %d stubs, want at least %d (every record of the copied range)", got, missed+3)
	}
	if got := st.StubFetched.Load(); got != 2 {
		t.Errorf("second pass fetched %d records, want 2 (late, driver-only)", got)
	}
	if got := st.Records.Load() - recs1; got != 2 {
		t.Errorf("second pass copied %d records, want 2", got)
	}
	if got, max := st.Bytes.Load()-bytes1, uint64(100); got > max {
		t.Errorf("second pass copied %d bytes of values, want at most %d (the first pass copied %d)", got, max, bytes1)
	}
	if f.Keys != 2 {
		t.Errorf("second pass reported %d keys copied, want 2", f.Keys)
	}
	if m := promText(t, b.Node(0)); !strings.Contains(m, "\nsdnkvs_kvs_catchup_stub_fetched_total 2\n") || !strings.Contains(m, fmt.Sprintf("\nsdnkvs_kvs_catchup_stubs_total %d\n", st.Stubs.Load())) {
		t.Errorf("/metrics lacks the stub counters (stubs %d, fetched 2)", st.Stubs.Load())
	}
	if served := a.Node(0).CatchupStats().ServedStubs.Load() + a.Node(1).CatchupStats().ServedStubs.Load() + a.Node(2).CatchupStats().ServedStubs.Load(); served == 0 {
		t.Errorf("the source served no stubs")
	}
	ra, _ := dcRecords(t, a)
	rb, hb := dcRecords(t, b)
	for k, want := range ra {
		if got := rb[k]; got != want {
			t.Errorf("%s: B holds %+v, A %+v", k, got, want)
		} else if hb[k] < 2 {
			t.Errorf("%s: on %d of B's nodes, want a quorum", k, hb[k])
		}
	}
	if f.G < mid+5 {
		t.Errorf("second pass's cursor %d is below the last record %d", f.G, mid+5)
	}

	// A node that copied nothing asks for values, not stubs.
	pc1 := dialOrder(t, b.Node(1))
	pc1.send(t, catchupFrame(t, 3, cursor, "A"))
	if f := waitJob(t, pc1, 3, 60*time.Second); f.State != orderwire.JobDone {
		t.Fatalf("third pass ended in state %d, want done", f.State)
	}
	if st1 := b.Node(1).CatchupStats(); st1.Stubs.Load() != 0 || st1.Records.Load() < missed {
		t.Errorf("a node without a copied range checked %d stubs and copied %d records, want 0 and >= %d", st1.Stubs.Load(), st1.Records.Load(), missed)
	}
}

// TestCatchupCover: the copied range grows with passes that touch it and
// is replaced by one that does not; stubs are asked only from inside it.
func TestCatchupCover(t *testing.T) {
	var c catchupCover
	tg := func(g uint64) Tag { return Tag{Counter: g} }
	if !c.stubBound(tg(5)).IsZero() {
		t.Fatal("an empty range gave a stub bound")
	}
	c.note(tg(10), tg(20))
	for _, tc := range []struct {
		cursor, want uint64
	}{{9, 0}, {10, 20}, {15, 20}, {20, 0}, {25, 0}} {
		if got := c.stubBound(tg(tc.cursor)); got != tg(tc.want) {
			t.Errorf("range (10, 20], cursor %d: bound %v, want %d", tc.cursor, got, tc.want)
		}
	}
	c.note(tg(15), tg(30)) // overlaps: joined
	c.note(tg(5), tg(12))  // touches from below: joined
	if c.lo != tg(5) || c.hi != tg(30) {
		t.Errorf("joined range (%v, %v], want (5, 30]", c.lo, c.hi)
	}
	c.note(tg(40), tg(50)) // apart: replaces
	if c.lo != tg(40) || c.hi != tg(50) {
		t.Errorf("range (%v, %v] after a pass apart, want (40, 50]", c.lo, c.hi)
	}
	c.note(tg(45), tg(44)) // a pass that copied nothing
	if c.lo != tg(40) || c.hi != tg(50) {
		t.Errorf("range (%v, %v] changed by an empty pass", c.lo, c.hi)
	}
}

// TestServeTags: a DC peer's stub check answers each key's tag (zero for
// none); a request over the chunk limit or with a malformed key list
// drops the connection and is counted.
func TestServeTags(t *testing.T) {
	c := testCluster(t, 3, 2, 2*time.Second)
	putOn(t, c, []int{0}, "held", Tag{Counter: 7, Writer: 1 << 48}, "v", false)
	ask := func(req []byte) (response, error) {
		conn, err := rawPeer(t, c, 0, testSecret, 2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(req); err != nil {
			return response{}, err
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		body, err := newFrameReader(conn, 1<<20).next()
		if err != nil {
			return response{}, err
		}
		var r response
		err = decodeResp(body, &r)
		return r, err
	}
	r, err := ask(appendTagsReq(nil, 5, [][]byte{[]byte("held"), []byte("absent")}))
	if err != nil || r.kind != kindTags || r.id != 5 || r.status != statusOK || len(r.val) != 2*TagSize {
		t.Fatalf("answer %+v, %v", r, err)
	}
	if got := DecodeTag(r.val); got != (Tag{Counter: 7, Writer: 1 << 48}) {
		t.Errorf("held: tag %v", got)
	}
	if got := DecodeTag(r.val[TagSize:]); !got.IsZero() {
		t.Errorf("absent: tag %v, want zero", got)
	}
	before := c.Node(0).Stats().PeerBad.Load()
	big := make([][]byte, stubTagsChunk+1)
	for i := range big {
		big[i] = []byte(fmt.Sprintf("k%d", i))
	}
	bad := appendTagsReq(nil, 6, [][]byte{[]byte("k")})
	bad[len(bad)-2] = 0xff // the key's length runs past the list
	for name, req := range map[string][]byte{"over the chunk limit": appendTagsReq(nil, 6, big), "malformed list": bad, "empty list": appendTagsReq(nil, 6, nil)} {
		if r, err := ask(req); err == nil {
			t.Errorf("%s: answered %+v instead of dropping the connection", name, r)
		}
	}
	if got := c.Node(0).Stats().PeerBad.Load() - before; got != 3 {
		t.Errorf("malformed stub checks counted %d, want 3", got)
	}
}

// FuzzKeyList: a key list that parses re-encodes to the same bytes, and
// no key is longer than the limit.
func FuzzKeyList(f *testing.F) {
	f.Add(appendKeyList(nil, [][]byte{[]byte("a"), []byte(""), []byte("key")}))
	f.Add([]byte{0, 5, 'a'})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := parseKeyList(b, 16)
		if err != nil {
			return
		}
		for _, k := range keys {
			if len(k) > 16 {
				t.Fatalf("key of %d bytes over the limit", len(k))
			}
		}
		if out := appendKeyList(nil, keys); string(out) != string(b) {
			t.Fatalf("re-encoded %x, parsed from %x", out, b)
		}
	})
}

// TestFetchKeysFitFrame: a fetch never asks for more records of the
// largest size than the source can answer in one frame, and at least one.
func TestFetchKeysFitFrame(t *testing.T) {
	for _, tc := range []struct{ maxKey, maxValue, want int }{
		{4 << 10, 64 << 10, verifyFetchMax},
		{4 << 10, 1 << 20, 47},
		{60000, 512 << 20, 1},
	} {
		n := &Node{cfg: Config{MaxKey: tc.maxKey, MaxValue: tc.maxValue}}
		got := n.fetchKeys()
		if got != tc.want {
			t.Errorf("key %d, value %d: %d keys per fetch, want %d", tc.maxKey, tc.maxValue, got, tc.want)
		}
		if got > 1 && got*(tc.maxKey+tc.maxValue+recordHeader+6) > maxCatchupFrame-1024 {
			t.Errorf("key %d, value %d: %d records of the largest size exceed a frame", tc.maxKey, tc.maxValue, got)
		}
	}
}
