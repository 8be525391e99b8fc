package kvs

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// putMany stores records directly on the given nodes' replicas and waits
// for every commit; with force each replaces whatever the replica holds
// (Store.PutRepair with an unbounded bound), as a corrupt or forged record
// would.
func putMany(t testing.TB, c *Cluster, nodes []int, recs map[string]dcRec, force bool) {
	t.Helper()
	var wg sync.WaitGroup
	done := completionFunc(func(_ uint64, ok bool, _ Tag) {
		if !ok {
			t.Error("local put failed")
		}
		wg.Done()
	})
	for _, i := range nodes {
		st := c.Node(i).store
		for k, r := range recs {
			var flags byte
			if r.tomb {
				flags = flagTombstone
			}
			wg.Add(1)
			if force {
				st.PutRepair([]byte(k), r.tag, flags, []byte(r.val), Tag{Counter: math.MaxUint64, Writer: math.MaxUint64}, 0, done)
			} else {
				st.Put([]byte(k), r.tag, flags, []byte(r.val), 0, done)
			}
		}
	}
	wg.Wait()
}

// PutRepair replaces a record at or below its bound whatever the tags
// (lower, equal with another value), removes the key for a zero tag, and
// keeps a record above the bound unless the repair's tag is higher still;
// the change index follows every case.
func TestStorePutRepair(t *testing.T) {
	s, err := OpenStore(StoreOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(repair bool, key string, tag Tag, val string, bound Tag) Tag {
		var held Tag
		var wg sync.WaitGroup
		wg.Add(1)
		done := completionFunc(func(_ uint64, ok bool, h Tag) {
			if !ok {
				t.Errorf("put %s failed", key)
			}
			held = h
			wg.Done()
		})
		if repair {
			s.PutRepair([]byte(key), tag, 0, []byte(val), bound, 0, done)
		} else {
			s.Put([]byte(key), tag, 0, []byte(val), 0, done)
		}
		wg.Wait()
		return held
	}
	bound := boundTag(100)
	put(false, "same", stampTag(50), "good", Tag{})
	put(false, "higher", stampTag(90), "forged", Tag{})
	put(false, "ghost", stampTag(60), "ghost", Tag{})
	put(false, "new", stampTag(150), "new", Tag{})
	put(false, "new2", stampTag(150), "new", Tag{})

	cases := []struct {
		key     string
		tag     Tag
		val     string
		wantTag Tag
		wantVal string
	}{
		{"same", stampTag(50), "fixed", stampTag(50), "fixed"},   // same tag, other value
		{"higher", stampTag(70), "good", stampTag(70), "good"},   // a lower tag replaces a forged higher one
		{"ghost", Tag{}, "", Tag{}, ""},                          // removed
		{"new", stampTag(80), "old", stampTag(150), "new"},       // above the bound: kept
		{"new2", stampTag(160), "newer", stampTag(160), "newer"}, // above the bound, but the repair is newer
		{"absent", stampTag(40), "copied", stampTag(40), "copied"},
	}
	for _, c := range cases {
		if held := put(true, c.key, c.tag, c.val, bound); held != c.wantTag {
			t.Errorf("%s: held %v, want %v", c.key, held, c.wantTag)
		}
		tg, _, v, err := s.Get([]byte(c.key), true, nil)
		if err != nil || tg != c.wantTag || string(v) != c.wantVal {
			t.Errorf("%s: %v %q (%v), want %v %q", c.key, tg, v, err, c.wantTag, c.wantVal)
		}
		// Past the cache: what Badger holds.
		tg, _, v, err = s.dbGet([]byte(c.key), true, nil)
		if err != nil || tg != c.wantTag || string(v) != c.wantVal {
			t.Errorf("%s on disk: %v %q (%v)", c.key, tg, v, err)
		}
	}
	// The change index is exactly the records.
	idx := map[string]Tag{}
	if _, err := s.changesAfter(Tag{}, 1000, func(e *changeEntry) bool {
		if _, dup := idx[string(e.key)]; dup {
			t.Errorf("two index entries for %s", e.key)
		}
		idx[string(e.key)] = e.tag
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if got, ok := idx[c.key]; ok != !c.wantTag.IsZero() || got != c.wantTag {
			t.Errorf("%s: index entry %v (%v), want %v", c.key, got, ok, c.wantTag)
		}
	}
}

// TestCatchupVerifyRepairs: DC B holds records that an incremental pass
// never looks at (at or below its cursor) and that differ from A's: one
// with A's tag and another value, one with a wrong higher tag, one A never
// had, one older than A's. A plain pass leaves them; a verify pass makes
// B equal to A on a quorum, keeps B's record written above the bound, and
// moves only digests, lists and the differing records.
func TestCatchupVerifyRepairs(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0, func(c *Config) { c.Cluster = "dc-a" })
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 0, 0, func(c *Config) { c.Cluster = "dc-b" })
	all := []int{0, 1, 2}
	const keys = 20000
	g := uint64(1_000_000)
	base := map[string]dcRec{}
	for i := range keys {
		g++
		base[fmt.Sprintf("k%05d", i)] = dcRec{tag: stampTag(g), val: fmt.Sprintf("v%d", g), tomb: i%97 == 0}
	}
	putMany(t, a, all, base, false)
	putMany(t, b, all, base, false)
	cursor := stampTag(g)
	bound := g + 1000
	good := func(k string) dcRec { return base[k] }
	bad := map[string]dcRec{
		"k00005": {tag: good("k00005").tag, val: "corrupt"},                   // same tag, other value
		"k07000": {tag: stampTag(g + 500), val: "forged"},                     // a wrong higher tag below the bound
		"k19999": {tag: stampTag(good("k19999").tag.Counter - 1), val: "old"}, // older than A's
		"ghost":  {tag: stampTag(g - 3), val: "A never had it"},               // only in B
	}
	putMany(t, b, all, bad, true)
	// In flight when the pass started: newer in B than the bound, kept.
	putMany(t, b, all, map[string]dcRec{"k12345": {tag: stampTag(bound + 10), val: "in flight"}}, false)
	// Outside the order (an unsequenced tag, as the testbed's per-DC
	// marker): each DC keeps its own.
	putMany(t, a, all, map[string]dcRec{"marker": {tag: Tag{Counter: 5, Writer: 7}, val: "A"}}, false)
	putMany(t, b, all, map[string]dcRec{"marker": {tag: Tag{Counter: 5, Writer: 8}, val: "B"}}, false)
	// Above the bound in A only: copied (the incremental pass sees it).
	putMany(t, a, all, map[string]dcRec{"k15000": {tag: stampTag(bound + 20), val: "new in A"}}, false)

	check := func(wantRepaired bool) (wrong int) {
		ra, _ := dcRecords(t, a)
		rb, hb := dcRecords(t, b)
		for k := range bad {
			want, inA := ra[k]
			got, inB := rb[k]
			if (got == want && inA == inB) != wantRepaired {
				wrong++
				t.Logf("%s: B %+v (%v), A %+v (%v)", k, got, inB, want, inA)
			}
			if wantRepaired && inB && hb[k] < 2 {
				t.Errorf("%s repaired on %d of B's nodes, want a quorum", k, hb[k])
			}
		}
		if got := rb["marker"]; got.val != "B" {
			t.Errorf("marker: B holds %+v: the verify touched a record outside the order", got)
		}
		if got := rb["k12345"]; got.val != "in flight" {
			t.Errorf("k12345: B holds %+v: the verify replaced a record above its bound", got)
		}
		for k, want := range ra {
			if _, isBad := bad[k]; !isBad && k != "k12345" && k != "marker" && rb[k] != want {
				t.Errorf("%s: B holds %+v, A %+v", k, rb[k], want)
			}
		}
		return wrong
	}

	pc := dialOrder(t, b.Node(0))
	runPass(t, pc, 1, cursor, 0)
	if wrong := check(false); wrong != 0 {
		t.Fatalf("a plain pass changed %d of the differing records: the test does not test the verify", wrong)
	}

	runPass(t, pc, 2, cursor, bound)
	if wrong := check(true); wrong != 0 {
		t.Fatalf("%d differing records not repaired", wrong)
	}
	st := b.Node(0).CatchupStats()
	if st.Verifies.Load() != 1 || st.VerifyRepaired.Load() != uint64(len(bad)) {
		t.Errorf("verifies %d, repaired %d, want 1 and %d", st.Verifies.Load(), st.VerifyRepaired.Load(), len(bad))
	}
	// Digests narrowed the comparison: far fewer records listed than held.
	if listed := st.VerifyListed.Load(); listed == 0 || listed > keys/4 {
		t.Errorf("listed %d records for %d keys and %d differences", listed, keys, len(bad))
	}
	t.Logf("ranges %d, listed %d, repaired %d; served %d verify requests", st.VerifyRanges.Load(), st.VerifyListed.Load(), st.VerifyRepaired.Load(), a.Node(0).CatchupStats().VerifyServed.Load())

	// A second verify finds nothing to repair.
	runPass(t, pc, 3, cursor, bound)
	if st.VerifyRepaired.Load() != uint64(len(bad)) {
		t.Errorf("the second verify repaired %d more", st.VerifyRepaired.Load()-uint64(len(bad)))
	}
}

// A source node that cannot be reached (dead, or killed mid-comparison:
// both end its verifyFrom with an error) makes the verify pass go on with
// the source DC's next node, from the start of the comparison; the
// records are repaired all the same, and the failure is counted.
func TestCatchupVerifyNextSourceNode(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0, func(c *Config) { c.Cluster = "dc-a" })
	dead := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0]) // nothing listens
	b := dcCluster(t, "B", map[string][]string{"A": append([]string{dead}, peerAddrs(a)...)}, 0, 0, func(c *Config) { c.Cluster = "dc-b" })
	all := []int{0, 1, 2}
	base, g := sameRecords(t, 2000, a, b)
	putMany(t, b, all, map[string]dcRec{"k00042": {tag: base["k00042"].tag, val: "corrupt"}}, true)

	n := b.Node(0)
	j := &catchupJob{id: 1, source: "A", verify: true, bound: g + 1000} // srcIdx 0: the dead node first
	if err := n.verifyJob(t.Context(), j); err != nil {
		t.Fatalf("verify with the first source node dead: %v", err)
	}
	st := n.CatchupStats()
	if st.Failures.Load() < 1 || st.VerifyRepaired.Load() != 1 {
		t.Fatalf("failures %d (want >= 1), repaired %d (want 1)", st.Failures.Load(), st.VerifyRepaired.Load())
	}
	if rb, hb := dcRecords(t, b); rb["k00042"] != base["k00042"] || hb["k00042"] < 2 {
		t.Fatalf("k00042 in B: %+v on %d nodes, want %+v on a quorum", rb["k00042"], hb["k00042"], base["k00042"])
	}
}

// TestCatchupVerifyRepairsMinorityReplica: a record that differs on one
// replica of the joining DC only, a replica other than the driver (a
// corrupt value with the good tag, an older record, a key the source never
// had), is found by comparing the source with every replica of the DC and
// repaired on that replica; a plain pass leaves it.
func TestCatchupVerifyRepairsMinorityReplica(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0, func(c *Config) { c.Cluster = "dc-a" })
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 0, 0, func(c *Config) { c.Cluster = "dc-b" })
	base, g := sameRecords(t, 5000, a, b)
	cursor, bound := stampTag(g), g+1000
	putMany(t, b, []int{2}, map[string]dcRec{
		"k00005": {tag: base["k00005"].tag, val: "corrupt"},
		"ghost":  {tag: stampTag(g - 3), val: "A never had it"},
	}, true)
	putMany(t, b, []int{1}, map[string]dcRec{
		"k04000": {tag: stampTag(base["k04000"].tag.Counter - 1), val: "old"},
	}, true)
	held := func(node int, k string) (Tag, string) {
		tg, _, v, err := b.Node(node).store.dbGet([]byte(k), true, nil)
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			t.Fatal(err)
		}
		return tg, string(v)
	}
	wrong := func() (n int) {
		for _, c := range []struct {
			node int
			key  string
		}{{2, "k00005"}, {2, "ghost"}, {1, "k04000"}} {
			tg, v := held(c.node, c.key)
			want, inA := base[c.key]
			if inA && (tg != want.tag || v != want.val) || !inA && !tg.IsZero() {
				n++
				t.Logf("B node %d %s: %v %q", c.node+1, c.key, tg, v)
			}
		}
		return n
	}
	pc := dialOrder(t, b.Node(0))
	runPass(t, pc, 1, cursor, 0)
	if n := wrong(); n != 3 {
		t.Fatalf("a plain pass changed the minority records (%d of 3 still differ): the test does not test the verify", n)
	}
	runPass(t, pc, 2, cursor, bound)
	if n := wrong(); n != 0 {
		t.Fatalf("%d of 3 records that differ on one replica other than the driver were not repaired", n)
	}
	if got := b.Node(0).CatchupStats().VerifyRepaired.Load(); got < 3 {
		t.Errorf("repaired %d records, want at least 3", got)
	}
	if m := promText(t, b.Node(0)); strings.Contains(m, "\nsdnkvs_kvs_catchup_verify_peer_bytes_total 0\n") || !strings.Contains(m, "\nsdnkvs_kvs_catchup_verify_peer_bytes_total ") {
		t.Errorf("/metrics: no bytes from the DC peers counted:\n%s", m)
	}
}

// sameRecords stores n records (keys k00000.., stamped tags from
// 1,000,001) on every node of each DC given and returns them with the
// last tag's G.
func sameRecords(t *testing.T, n int, dcs ...*Cluster) (map[string]dcRec, uint64) {
	t.Helper()
	g := uint64(1_000_000)
	base := map[string]dcRec{}
	for i := range n {
		g++
		base[fmt.Sprintf("k%05d", i)] = dcRec{tag: stampTag(g), val: fmt.Sprintf("v%d", g)}
	}
	for _, c := range dcs {
		putMany(t, c, []int{0, 1, 2}, base, false)
	}
	return base, g
}

// runPass sends job a CATCHUP from source DC "A" above cursor (a verify
// pass with bound when bound is not 0) and waits until it is done.
func runPass(t *testing.T, pc *progressConn, job uint64, cursor Tag, bound uint64) {
	t.Helper()
	f := catchupFrame(t, job, cursor, "A")
	if bound != 0 {
		f.Flags, f.Bound = orderwire.CatchupVerify, bound
	}
	pc.send(t, f)
	if f := waitJob(t, pc, job, 60*time.Second); f.State != orderwire.JobDone {
		t.Fatalf("pass %d (verify bound %d) ended in state %d", job, bound, f.State)
	}
}

// TestCatchupVerifySourceAndPeerKilled: the source node and one of the
// joining DC's peers stop while the verify pass waits for their first
// digests (the whole store's): the pass goes on with the source DC's next
// node and without the peer, completes, and repairs the record on the
// replicas still up.
func TestCatchupVerifySourceAndPeerKilled(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0, func(c *Config) { c.Cluster = "dc-a" })
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 0, 0, func(c *Config) { c.Cluster = "dc-b" })
	base, g := sameRecords(t, 50000, a, b)
	putMany(t, b, []int{0, 1, 2}, map[string]dcRec{"k34567": {tag: base["k34567"].tag, val: "corrupt"}}, true)
	n := b.Node(0)
	st := n.CatchupStats()
	served := a.Node(0).CatchupStats()
	j := &catchupJob{id: 1, source: "A", verify: true, bound: g + 1000}
	done := make(chan error, 1)
	go func() { done <- n.verifyJob(t.Context(), j) }()
	testenv.WaitFor(t, 20*time.Second, "the source's first digest asked", func() bool { return served.VerifyServed.Load() >= 1 })
	a.Stop(0)
	b.Stop(2)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("verify with its source node and a peer stopped mid-pass: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("verify did not end")
	}
	if st.Failures.Load() < 1 {
		t.Fatalf("no source failure counted: the source node was stopped after the pass ended, the test does not test a kill mid-pass")
	}
	for _, i := range []int{0, 1} {
		tg, _, v, err := b.Node(i).store.dbGet([]byte("k34567"), true, nil)
		if err != nil || tg != base["k34567"].tag || string(v) != base["k34567"].val {
			t.Fatalf("B node %d holds %v %q (%v), want A's record", i+1, tg, v, err)
		}
	}
}

// TestCatchupVerifyLeavesOutLearner: a DC peer that is a learner (a wiped
// node copying the store from its peers) refuses the verify pass's
// digests and lists, so the pass leaves it out instead of repairing every
// record it lacks yet through the DC's quorum; its voting replicas are
// still compared and repaired.
func TestCatchupVerifyLeavesOutLearner(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0, func(c *Config) { c.Cluster = "dc-a" })
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 0, 0, func(c *Config) { c.Cluster = "dc-b" })
	base, g := sameRecords(t, 2000, a)
	putMany(t, b, []int{0, 1}, base, false) // node 3 holds nothing: wiped, syncing
	b.Node(2).voter.Store(false)
	// One record corrupt on voting node 2: the pass must still repair it.
	putMany(t, b, []int{1}, map[string]dcRec{"k00007": {tag: base["k00007"].tag, val: "corrupt"}}, true)
	pc := dialOrder(t, b.Node(0))
	runPass(t, pc, 1, stampTag(g), g+1000)
	if got := b.Node(0).CatchupStats().VerifyRepaired.Load(); got != 1 {
		t.Errorf("repaired %d records, want 1 (the corrupt one on a voter; none for the learner's missing store)", got)
	}
	if tg, _, v, _ := b.Node(1).store.dbGet([]byte("k00007"), true, nil); tg != base["k00007"].tag || string(v) != base["k00007"].val {
		t.Errorf("voter's corrupt record not repaired: %v %q", tg, v)
	}
}

// TestCatchupVerifyPeerWithManyMore: a replica of the joining DC other
// than the driver holds far more records in a range than the source and
// the driver (5,000 keys the source never had, more than one list answer
// holds): one verify pass lists the range on that replica to its end and
// removes every one of them, not only the first answer's.
func TestCatchupVerifyPeerWithManyMore(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0, func(c *Config) { c.Cluster = "dc-a" })
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 0, 0, func(c *Config) { c.Cluster = "dc-b" })
	_, g := sameRecords(t, 1000, a, b)
	const ghosts = verifyListMax + 904
	extra := map[string]dcRec{}
	for i := range ghosts {
		extra[fmt.Sprintf("ghost%05d", i)] = dcRec{tag: stampTag(g - 500 + uint64(i%400)), val: "A never had it"}
	}
	putMany(t, b, []int{2}, extra, true)
	left := func() (n int) {
		for k := range extra {
			tg, _, _, err := b.Node(2).store.dbGet([]byte(k), false, nil)
			if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
				t.Fatal(err)
			}
			if !tg.IsZero() {
				n++
			}
		}
		return n
	}
	pc := dialOrder(t, b.Node(0))
	runPass(t, pc, 1, stampTag(g), g+1000)
	if n := left(); n != 0 {
		t.Fatalf("%d of %d records the source never had are left on the replica after one verify pass", n, ghosts)
	}
}
