package kvs

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const diffPass = "diff-test-password"

// diffDC starts a 3-node ABD cluster whose RESP port needs AUTH.
func diffDC(t *testing.T) *Cluster {
	t.Helper()
	return startCluster(t, "", 3, 2*time.Second, func(c *Config, _ string) { c.RequirePass = []byte(diffPass) })
}

func addrs(c *Cluster) []string {
	var a []string
	for i := 0; i < c.Len(); i++ {
		a = append(a, c.Node(i).Addr())
	}
	return a
}

// putLocal stores a record on one replica only, as a missed or stray write
// would leave it.
func putLocal(t *testing.T, n *Node, key string, tag Tag, deleted bool, val string) {
	t.Helper()
	var flags byte
	if deleted {
		flags = flagTombstone
	}
	done := make(chan bool, 1)
	n.store.Put([]byte(key), tag, flags, []byte(val), 0, doneFunc(func(ok bool) { done <- ok }))
	if !<-done {
		t.Fatal("local put failed")
	}
}

type doneFunc func(ok bool)

func (f doneFunc) writeDone(_ uint64, ok bool, _ Tag) { f(ok) }

// Two DCs made to differ on known keys: the scan reports exactly those,
// whatever node-level differences leave a DC's max-tag record unchanged.
func TestDiffReportsExactlyTheDifferingKeys(t *testing.T) {
	a, b := diffDC(t), diffDC(t)
	const keys = 1500
	// The same records in both DCs: replicate A's records into B's nodes.
	ra := redis.NewClient(&redis.Options{Addr: a.Node(0).Addr(), Password: diffPass})
	defer ra.Close()
	pipe := ra.Pipeline()
	for i := 0; i < keys; i++ {
		pipe.Set(bg, fmt.Sprintf("key:%05d", i), fmt.Sprintf("v%d", i), 0)
	}
	if _, err := pipe.Exec(bg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < keys; i++ {
		k := fmt.Sprintf("key:%05d", i)
		tag, del, v, err := a.Node(0).LocalGet([]byte(k))
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			putLocal(t, b.Node(j), k, tag, del, string(v))
			if tg, _, _, _ := a.Node(j).LocalGet([]byte(k)); tg != tag {
				putLocal(t, a.Node(j), k, tag, del, string(v))
			}
		}
	}
	hi := Tag{Counter: 1 << 40, Writer: 7}
	lo := Tag{Counter: 0, Writer: 1}
	// Differences: value (B newer on one node), only in A, deleted in B,
	// same value but another tag, a binary key.
	putLocal(t, b.Node(2), "key:00100", hi, false, "other")
	putLocal(t, a.Node(1), "key:99999-only-in-a", hi, false, "x")
	putLocal(t, b.Node(0), "key:00700", hi, true, "")
	putLocal(t, a.Node(2), "key:01200", hi, false, "v1200")
	putLocal(t, b.Node(1), "\x00bin\xff", hi, false, "b")
	// Node-level differences that leave both DCs' max-tag records equal.
	putLocal(t, b.Node(1), "key:00005", lo, false, "stale")
	putLocal(t, a.Node(0), "key:00900", Tag{Counter: 1 << 41, Writer: 9}, false, "same")
	putLocal(t, b.Node(2), "key:00900", Tag{Counter: 1 << 41, Writer: 9}, false, "same")

	var got []string
	st, err := Diff(bg, DiffOptions{A: addrs(a), B: addrs(b), Password: diffPass, Page: 64}, func(d KeyDiff) {
		got = append(got, string(d.Key))
		if string(d.Key) == "key:00700" && (!d.B.Deleted || d.A.Deleted) {
			t.Errorf("key:00700: A %v, B %v", d.A, d.B)
		}
		if string(d.Key) == "key:99999-only-in-a" && (d.B.Present || !d.A.Present) {
			t.Errorf("only-in-a: A %v, B %v", d.A, d.B)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"\x00bin\xff", "key:00100", "key:00700", "key:01200", "key:99999-only-in-a"}
	if !slices.Equal(got, want) {
		t.Fatalf("reported %q, want %q", got, want)
	}
	if st.Differing != len(want) || st.Scanned == 0 || st.Ranges < 3 {
		t.Fatalf("stats %+v", st)
	}
	// Ranges with equal digests are skipped: far fewer records read than
	// every node's every key.
	if st.Records >= 6*keys {
		t.Fatalf("read %d records: no range was skipped", st.Records)
	}
	t.Logf("%+v", st)
	// Identical DCs (A against itself): nothing reported.
	st, err = Diff(bg, DiffOptions{A: addrs(a), B: addrs(a), Password: diffPass}, func(d KeyDiff) { t.Errorf("A vs A: %q", d.Key) })
	if err != nil || st.Differing != 0 {
		t.Fatalf("A vs A: %+v %v", st, err)
	}
}

// The admin commands never serve an unauthenticated connection, and a node
// without a password refuses them altogether.
func TestDiffNeedsAuth(t *testing.T) {
	a := diffDC(t)
	rc := redis.NewClient(&redis.Options{Addr: a.Node(0).Addr()})
	defer rc.Close()
	if err := rc.Do(bg, "SDNKVS.SCAN", "", "", 10).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("unauthenticated SCAN: %v", err)
	}
	open := testCluster(t, 1, 0, time.Second)
	rc2 := redis.NewClient(&redis.Options{Addr: open.Node(0).Addr()})
	defer rc2.Close()
	if err := rc2.Do(bg, "SDNKVS.DIGEST", "", "").Err(); err == nil || !strings.Contains(err.Error(), "--requirepass-file") {
		t.Fatalf("DIGEST on a node without password: %v", err)
	}
	if _, err := Diff(bg, DiffOptions{A: addrs(a), B: addrs(a), Password: "wrong"}, func(KeyDiff) {}); err == nil {
		t.Fatal("diff with a wrong password succeeded")
	}
}
