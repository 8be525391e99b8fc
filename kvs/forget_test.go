package kvs

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// wipe stops node i, deletes its data directory and restarts it.
func wipe(t *testing.T, c *Cluster, i int) {
	t.Helper()
	c.Stop(i)
	if err := os.RemoveAll(c.Config(i).Dir); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(i); err != nil {
		t.Fatal(err)
	}
}

func waitVoter(t *testing.T, c *Cluster, i int) {
	t.Helper()
	testenv.WaitFor(t, 20*time.Second, fmt.Sprintf("node %d votes", i+1), func() bool {
		n := c.Node(i)
		return n != nil && n.Voter() && n.Ready()
	})
}

// TestWipedReplicaDoesNotVote is the reproduction: SET x v2 is
// acknowledged by nodes 1 and 2 (node 3 holds v1); node 2 loses its data
// directory and restarts while node 1 is down. A read through nodes 2 and 3 must
// never return v1. Once node 1 is back, node 2 repairs and every read
// returns v2, also after node 1 stops again.
func TestWipedReplicaDoesNotVote(t *testing.T) {
	c := testCluster(t, 3, 2, time.Second)
	rc := client(t, c, 0)
	if err := rc.Set(bg, "x", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.Stop(2)
	if err := rc.Set(bg, "x", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(2); err != nil {
		t.Fatal(err)
	}
	c.Stop(0)
	wipe(t, c, 1) // with node 1 down it cannot be repaired yet
	if c.Node(1).Voter() {
		t.Fatal("a wiped node votes")
	}
	r, err := http.Get("http://" + c.Node(1).HTTPAddr() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "learner") && !strings.Contains(string(body), "repairing") {
		t.Fatalf("/ready of a wiped node: %d %s", r.StatusCode, body)
	}
	if m := metricsOf(t, c.Node(1)); !strings.Contains(m, "\nsdnkvs_kvs_voter 0\n") {
		t.Fatalf("/metrics of a wiped node does not say it is not a voter:\n%s", m)
	}
	if m := metricsOf(t, c.Node(2)); !strings.Contains(m, "\nsdnkvs_kvs_voter 1\n") {
		t.Fatalf("/metrics of a voter:\n%s", m)
	}
	for _, i := range []int{1, 2} {
		v, err := client(t, c, i).Get(bg, "x").Result()
		if err == nil && v != "v2" {
			t.Fatalf("GET through node %d = %q: an acknowledged write was lost", i+1, v)
		}
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	waitVoter(t, c, 1)
	if tg, _, v, _ := c.Node(1).LocalGet([]byte("x")); string(v) != "v2" {
		t.Fatalf("repaired node holds %q (tag %v), want v2", v, tg)
	}
	c.Stop(0)
	testenv.WaitFor(t, 10*time.Second, "nodes 2 and 3 connected", func() bool { return c.Node(1).Ready() && c.Node(2).Ready() })
	for _, i := range []int{1, 2} {
		if v, err := client(t, c, i).Get(bg, "x").Result(); err != nil || v != "v2" {
			t.Fatalf("after repair, GET through node %d = %q, %v", i+1, v, err)
		}
	}
}

// fill writes n keys through node 0 and returns them.
func fill(t *testing.T, c *Cluster, n int) map[string]string {
	t.Helper()
	rc := client(t, c, 0)
	want := map[string]string{}
	pipe := rc.Pipeline()
	for i := 0; i < n; i++ {
		k, v := fmt.Sprintf("key-%04d", i), fmt.Sprintf("value-%04d-%s", i, strings.Repeat("x", 100))
		want[k] = v
		pipe.Set(bg, k, v, 0)
	}
	if _, err := pipe.Exec(bg); err != nil {
		t.Fatal(err)
	}
	return want
}

// checkLocal asserts node i holds every key of want.
func checkLocal(t *testing.T, c *Cluster, i int, want map[string]string) {
	t.Helper()
	for k, v := range want {
		_, del, got, err := c.Node(i).LocalGet([]byte(k))
		if err != nil || del || string(got) != v {
			t.Fatalf("node %d: %s = %q, %v", i+1, k, got, err)
		}
	}
}

// damage stops node i, applies f to its data directory and restarts it:
// the node must start (no crash loop), not vote until repaired, then hold
// every key again.
func damage(t *testing.T, what string, f func(dir string)) {
	t.Run(what, func(t *testing.T) {
		c := testCluster(t, 3, 2, 2*time.Second)
		want := fill(t, c, 300)
		c.Stop(2)
		f(c.Config(2).Dir)
		if err := c.Restart(2); err != nil {
			t.Fatalf("node does not start after %s: %v", what, err)
		}
		if c.Node(2).Voter() {
			t.Fatalf("node votes right after %s", what)
		}
		waitVoter(t, c, 2)
		checkLocal(t, c, 2, want)
		// The repaired node answers reads with a quorum of one other.
		c.Stop(0)
		for k, v := range want {
			if got, err := client(t, c, 2).Get(bg, k).Result(); err != nil || got != v {
				t.Fatalf("GET %s = %q, %v", k, got, err)
			}
			break
		}
	})
}

func ssts(t *testing.T, dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(m) == 0 {
		t.Fatal("no SST in", dir)
	}
	return m
}

func TestDamagedStoreRepairs(t *testing.T) {
	damage(t, "wiped directory", func(dir string) { os.RemoveAll(dir) })
	damage(t, "deleted MANIFEST", func(dir string) { os.Remove(filepath.Join(dir, "MANIFEST")) })
	damage(t, "flipped SST bytes", func(dir string) {
		p := ssts(t, dir)[0]
		b, _ := os.ReadFile(p)
		for i := len(b) / 3; i < len(b)/3+64; i++ {
			b[i] ^= 0xff
		}
		os.WriteFile(p, b, 0o644)
	})
	damage(t, "truncated SST", func(dir string) {
		p := ssts(t, dir)[0]
		fi, _ := os.Stat(p)
		os.Truncate(p, fi.Size()/2)
	})
}

// TestPeersChangeNeedsReconfigure: the split brain, a node
// restarted with --peers naming only itself, refuses to start; with
// Reconfigure it starts and stores the new membership.
func TestPeersChangeNeedsReconfigure(t *testing.T) {
	c := testCluster(t, 3, 2, time.Second)
	cfg := c.Config(2)
	c.Stop(2)
	cfg.Peers = []string{"3=" + cfg.PeerListen}
	cfg.Quorum = 1
	if n, err := Start(cfg); err == nil {
		n.Close()
		t.Fatal("a node started with a different peer list")
	} else if !strings.Contains(err.Error(), "--reconfigure") {
		t.Fatalf("error does not name the way out: %v", err)
	}
	cfg.Reconfigure = true
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	cfg.Reconfigure = false
	if n, err = Start(cfg); err != nil {
		t.Fatalf("restart with the reconfigured membership: %v", err)
	}
	n.Close()
}

func TestIdentityMismatch(t *testing.T) {
	c := testCluster(t, 3, 2, time.Second)
	cfg := c.Config(2)
	c.Stop(2)
	cfg.Cluster = "other"
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "belongs to cluster") {
		t.Fatalf("another cluster's directory: %v", err)
	}
}

// TestWriterSeqLoss: deleting writer-seq must not restart the sequence.
func TestWriterSeqLoss(t *testing.T) {
	c := testCluster(t, 3, 2, time.Second)
	rc := client(t, c, 0)
	if err := rc.Set(bg, "a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	before, _, _, _ := c.Node(0).LocalGet([]byte("a"))
	c.Stop(0)
	if err := os.Remove(filepath.Join(c.Config(0).Dir, "writer-seq")); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	waitVoter(t, c, 0)
	if err := rc.Set(bg, "b", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The write is acknowledged by a quorum (2 of 3): node 0's own copy
	// may land a moment later (seen in CI under load).
	var after Tag
	testenv.WaitFor(t, 10*time.Second, "node 1 stores b", func() bool {
		after, _, _, _ = c.Node(0).LocalGet([]byte("b"))
		return !after.IsZero()
	})
	if after.Writer <= before.Writer {
		t.Fatalf("writer after losing writer-seq %#x <= before %#x", after.Writer, before.Writer)
	}
}

func metricsOf(t *testing.T, n *Node) string {
	t.Helper()
	r, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return string(b)
}
