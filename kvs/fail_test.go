package kvs

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// With 5 of 9 nodes down no quorum of 5 exists: every command fails with an
// error (never a wrong or stale answer), and nothing is written.
func TestNoQuorumFailsWithErrors(t *testing.T) {
	c := testCluster(t, 9, 5, time.Second)
	a := client(t, c, 0)
	if err := a.Set(bg, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 4; i < 9; i++ {
		if err := c.Stop(i); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		rc := client(t, c, i)
		if err := rc.Set(bg, "k", fmt.Sprintf("during%d", i), 0).Err(); err == nil || !strings.Contains(err.Error(), "quorum") {
			t.Fatalf("SET via node %d with 5 of 9 down: err = %v, want a quorum error", i+1, err)
		}
		if v, err := rc.Get(bg, "k").Result(); err == nil || !strings.Contains(err.Error(), "quorum") {
			t.Fatalf("GET via node %d with 5 of 9 down = %q, %v; want a quorum error", i+1, v, err)
		}
		if err := rc.Del(bg, "k").Err(); err == nil {
			t.Fatalf("DEL via node %d with 5 of 9 down succeeded", i+1)
		}
	}
	if c.Node(0).Ready() {
		t.Fatalf("node 1 reports ready with 5 of 9 nodes down")
	}
	for i := 4; i < 9; i++ {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	waitReady(t, c)
	if v, err := client(t, c, 8).Get(bg, "k").Result(); err != nil || v != "before" {
		t.Fatalf("after recovery GET = %q, %v; want the value from before the outage", v, err)
	}
}

func waitReady(t *testing.T, c *Cluster) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "every node connected to every peer", c.AllReady)
}

// Every node is stopped and restarted from disk: every acknowledged write
// is still there, on at least a quorum of replicas.
func TestDurableAcrossRestartOfEveryNode(t *testing.T) {
	c := testCluster(t, 9, 5, 10*time.Second)
	a := client(t, c, 2)
	const n = 200
	for i := 0; i < n; i++ {
		if err := a.Set(bg, fmt.Sprintf("key%d", i), fmt.Sprintf("val%d", i), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Del(bg, "key7").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < c.Len(); i++ {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	waitReady(t, c)
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("key%d", i)
		holders := 0
		for j := 0; j < c.Len(); j++ {
			_, del, v, err := c.Node(j).LocalGet([]byte(key))
			if err != nil {
				t.Fatal(err)
			}
			if (i == 7 && del) || (i != 7 && string(v) == fmt.Sprintf("val%d", i)) {
				holders++
			}
		}
		if holders < 5 {
			t.Fatalf("%s is held by %d replicas after restart, want >= 5", key, holders)
		}
	}
	b := client(t, c, 6)
	for i := 0; i < n; i++ {
		v, err := b.Get(bg, fmt.Sprintf("key%d", i)).Result()
		if i == 7 {
			if err == nil {
				t.Fatalf("deleted key7 came back as %q", v)
			}
			continue
		}
		if err != nil || v != fmt.Sprintf("val%d", i) {
			t.Fatalf("key%d after restart = %q, %v", i, v, err)
		}
	}
}

// A read whose quorum sees different tags writes the newest value back, so
// a node that missed a write is brought up to date.
func TestReadRepairUpdatesStaleNode(t *testing.T) {
	c := testCluster(t, 9, 5, 10*time.Second)
	a := client(t, c, 0)
	if err := a.Set(bg, "k", "old", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Nodes 6..9 miss the new write (exactly a quorum, 1..5, takes it).
	for i := 5; i < 9; i++ {
		c.Stop(i)
	}
	if err := a.Set(bg, "k", "new", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 9; i++ {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	newTag, _, _, _ := c.Node(0).LocalGet([]byte("k"))
	if tg, _, v, _ := c.Node(8).LocalGet([]byte("k")); string(v) != "old" || tg.Compare(newTag) >= 0 {
		t.Fatalf("node 9 should be stale before the read: %q %v", v, tg)
	}
	// Leave one fresh node (1) and the four stale ones: the read's quorum is
	// mixed and must repair.
	for i := 1; i < 5; i++ {
		c.Stop(i)
	}
	testenv.WaitFor(t, 10*time.Second, "node 6 sees the 4 other live nodes", func() bool { return c.Node(5).reachable() == 5 })
	if v, err := client(t, c, 5).Get(bg, "k").Result(); err != nil || v != "new" {
		t.Fatalf("GET = %q, %v; want new", v, err)
	}
	for i := 5; i < 9; i++ {
		tg, _, v, err := c.Node(i).LocalGet([]byte("k"))
		if err != nil || string(v) != "new" || tg != newTag {
			t.Fatalf("node %d after read repair holds %q tag %v (%v), want new tag %v", i+1, v, tg, err, newTag)
		}
	}
}
