package kvs

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestLearnerSyncKeepsRepair: a learner that got a verify pass's repair of
// a key (the source DC's record, at a bound) and then syncs from a voter
// that still holds a corrupt record of it with a wrong higher tag at or
// below the bound keeps the repair; a record above the bound (a newer
// write) is synced as usual, and a node that votes forgets the repairs.
func TestLearnerSyncKeepsRepair(t *testing.T) {
	c := dcCluster(t, "B", nil, 0, 0, func(*Config) {})
	l := c.Node(0)
	good, wrong, newer := stampTag(1000), stampTag(1500), stampTag(3000)
	bound := boundTag(2000)
	// Voter 1 holds the corrupt record (a wrong higher tag) and a newer
	// write of another key; the learner (node 0) holds nothing of either.
	putOn(t, c, []int{1}, "k", wrong, "corrupt", false)
	putOn(t, c, []int{1}, "n", newer, "newer", false)
	l.voter.Store(false)
	defer l.voter.Store(true)
	// The repair batch reaches the learner first.
	batch := appendScanRecord(nil, []byte("k"), good, 0, []byte("good"))
	batch = appendScanRecord(batch, []byte("n"), good, 0, []byte("old"))
	done := make(chan bool, 1)
	l.putBatch(batch, 2, bound, func(ok bool) { done <- ok })
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("repair batch failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("repair batch not done")
	}
	var p *peerClient
	for _, pc := range l.peers {
		if pc.addr == c.Config(1).PeerListen {
			p = pc
		}
	}
	if p == nil {
		t.Fatal("no peer client to node 2")
	}
	if _, err := l.syncFrom(p); err != nil {
		t.Fatalf("sync: %v", err)
	}
	get := func(k string) (Tag, string) {
		tg, _, val, err := l.store.dbGet([]byte(k), true, nil)
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			t.Fatal(err)
		}
		return tg, string(val)
	}
	if tg, val := get("k"); tg != good || val != "good" {
		t.Fatalf("k on the learner after its sync: %v %q, want the repair %v \"good\" (the voter's corrupt record won)", tg, val, good)
	}
	if tg, val := get("n"); tg != newer || val != "newer" {
		t.Fatalf("n on the learner after its sync: %v %q, want the newer write %v", tg, val, newer)
	}
	if err := l.becomeVoter(); err != nil {
		t.Fatal(err)
	}
	if l.learnRep.covers([]byte("k"), wrong) {
		t.Fatal("a voter still remembers the repairs it got as a learner")
	}
	// Overflow: past the byte limit the sync must run again.
	var r learnRepairs
	key := make([]byte, 1000)
	for i := range learnRepairsMax/(len(key)+learnRepairsOverhead) + 1 {
		copy(key, fmt.Appendf(nil, "k%d-", i))
		r.note(key, bound)
	}
	if r.size > learnRepairsMax {
		t.Fatalf("remembered %d bytes of repairs, the limit is %d", r.size, learnRepairsMax)
	}
	copy(key, "k1-")
	if !r.takeOverflow() || r.takeOverflow() || r.covers(key, good) {
		t.Fatal("an overflowed record of repairs is not reported once and cleared")
	}
}
