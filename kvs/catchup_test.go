package kvs

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// dcCluster starts a 3-node sequenced DC on loopback whose nodes know the
// remote DCs in remotes; page limits 0 are the defaults.
func dcCluster(t testing.TB, name string, remotes map[string][]string, pageBytes, pageRecs int, mods ...func(*Config)) *Cluster {
	t.Helper()
	return startCluster(t, name, 3, 5*time.Second, func(c *Config, spare string) {
		c.OrderListen, c.OrderSecret = spare, testOrderSecret
		c.DCName, c.Remotes, c.CatchupPageBytes, c.CatchupPageRecords = name, remotes, pageBytes, pageRecs
		for _, m := range mods {
			m(c)
		}
	})
}

func peerAddrs(c *Cluster) []string {
	var out []string
	for i := 0; i < c.Len(); i++ {
		out = append(out, c.Config(i).PeerListen)
	}
	return out
}

// putOn stores a record directly on the given nodes' replicas (as if a
// write had reached exactly those nodes) and waits for the commits.
func putOn(t testing.TB, c *Cluster, nodes []int, key string, tag Tag, val string, tomb bool) {
	t.Helper()
	var wg sync.WaitGroup
	var flags byte
	if tomb {
		flags, val = flagTombstone, ""
	}
	for _, i := range nodes {
		wg.Add(1)
		c.Node(i).store.Put([]byte(key), tag, flags, []byte(val), 0, completionFunc(func(_ uint64, ok bool, _ Tag) {
			if !ok {
				t.Errorf("local put of %s failed", key)
			}
			wg.Done()
		}))
	}
	wg.Wait()
}

type dcRec struct {
	tag  Tag
	val  string
	tomb bool
}

// dcRecords is a DC's record per key: the max-tag record over its nodes,
// and for each key how many nodes hold exactly that record.
func dcRecords(t testing.TB, c *Cluster) (map[string]dcRec, map[string]int) {
	t.Helper()
	recs, holders := map[string]dcRec{}, map[string]int{}
	for i := 0; i < c.Len(); i++ {
		err := c.Node(i).store.scanRecords(nil, nil, true, func(key []byte, tg Tag, flags byte, val []byte) bool {
			r := dcRec{tg, string(val), flags&flagTombstone != 0}
			switch cur, ok := recs[string(key)]; {
			case !ok || tg.Compare(cur.tag) > 0:
				recs[string(key)], holders[string(key)] = r, 1
			case tg == cur.tag:
				holders[string(key)]++
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return recs, holders
}

func stampTag(g uint64) Tag { return Tag{Counter: g, Writer: stampedWriter | g} }

// progressConn is a fake middlebox order connection that collects PROGRESS.
type progressConn struct {
	c    net.Conn
	mu   sync.Mutex
	last map[uint64]orderwire.Frame // by job
	all  []orderwire.Frame
}

func dialOrder(t testing.TB, n *Node) *progressConn {
	t.Helper()
	c, err := net.Dial("tcp", n.OrderAddr())
	if err != nil {
		t.Fatal(err)
	}
	self := peerauth.Hello{Cluster: OrderCluster, Role: peerauth.RoleSequencer, ID: 1}
	if _, err := peerauth.Client(c, testOrderSecret, self, time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	pc := &progressConn{c: c, last: map[uint64]orderwire.Frame{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rd := orderwire.NewReader(c)
		var f orderwire.Frame
		for rd.ReadFrame(&f) == nil {
			if f.Type == orderwire.Progress {
				pc.mu.Lock()
				pc.last[f.Job] = f
				pc.all = append(pc.all, f)
				pc.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	pc.send(t, orderwire.Frame{Type: orderwire.Hello, Epoch: 1, GFloor: 1})
	testenv.WaitFor(t, 5*time.Second, "order connection counted", func() bool { return n.SeqStats().OrderConns.Load() >= 1 })
	return pc
}

func (pc *progressConn) send(t testing.TB, f orderwire.Frame) {
	t.Helper()
	b, err := orderwire.Append(nil, &f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (pc *progressConn) state(job uint64) (orderwire.Frame, bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	f, ok := pc.last[job]
	return f, ok
}

func catchupFrame(t testing.TB, job uint64, cursor Tag, source string) orderwire.Frame {
	f := orderwire.Frame{Type: orderwire.Catchup, Job: job, G: cursor.Counter, W: cursor.Writer}
	if err := f.SetSource(source); err != nil {
		t.Fatal(err)
	}
	return f
}

func waitJob(t testing.TB, pc *progressConn, job uint64, timeout time.Duration) orderwire.Frame {
	t.Helper()
	var f orderwire.Frame
	testenv.WaitFor(t, timeout, fmt.Sprintf("job %d ends", job), func() bool {
		var ok bool
		f, ok = pc.state(job)
		return ok && f.State != orderwire.JobRunning
	})
	return f
}

// TestCatchupConverges: DC B missed writes that DC A took; a catch-up job
// from B's node (asked over the order stream) copies exactly the records
// above the cursor, B ends with A's record for every key, and a record B
// holds newer than A's is kept.
func TestCatchupConverges(t *testing.T) {
	// The DCs have different cluster ids (and the same secret).
	a := dcCluster(t, "A", nil, 64<<10, 100, func(c *Config) { c.Cluster = "dc-a" })
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 64<<10, 100, func(c *Config) { c.Cluster = "dc-b" })
	all := []int{0, 1, 2}
	const before, missed = 600, 400
	g := uint64(1_000_000)
	for i := 0; i < before; i++ { // written in both DCs
		g++
		putOn(t, a, all, fmt.Sprintf("k%04d", i), stampTag(g), fmt.Sprintf("v%d", g), false)
		putOn(t, b, all, fmt.Sprintf("k%04d", i), stampTag(g), fmt.Sprintf("v%d", g), false)
	}
	cursor := stampTag(g)
	for i := 0; i < missed; i++ { // only A: overwrites, deletes and new keys
		g++
		key := fmt.Sprintf("k%04d", (i*7)%(before+200))
		putOn(t, a, all, key, stampTag(g), fmt.Sprintf("v%d", g), i%10 == 0)
	}
	// B holds a newer record for one key than A: it must stay.
	g++
	putOn(t, a, all, "contested", stampTag(g), "older-in-A", false)
	putOn(t, b, all, "contested", stampTag(g+1000), "newer-in-B", false)
	// A record on only 2 of A's 3 nodes, missing on node 1 (which serves).
	g++
	putOn(t, a, []int{1, 2}, "only-on-two", stampTag(g), "majority", false)

	pc := dialOrder(t, b.Node(0))
	pc.send(t, catchupFrame(t, 7, cursor, "A"))
	f := waitJob(t, pc, 7, 60*time.Second)
	if f.State != orderwire.JobDone {
		t.Fatalf("job ended in state %d, want done", f.State)
	}
	ra, _ := dcRecords(t, a)
	rb, hb := dcRecords(t, b)
	for k, want := range ra {
		got := rb[k]
		if k == "contested" {
			if got.val != "newer-in-B" {
				t.Errorf("contested: B holds %+v: an older record overwrote a newer one", got)
			}
			continue
		}
		if got != want {
			t.Errorf("%s: B holds %+v, A %+v", k, got, want)
		} else if hb[k] < 2 {
			t.Errorf("%s: on %d of B's nodes, want a quorum", k, hb[k])
		}
	}
	// Transfer ~ the changes: every key changed above the cursor once.
	changed := 0
	for k, r := range ra {
		if r.tag.Compare(cursor) > 0 && k != "" {
			changed++
		}
	}
	st := b.Node(0).CatchupStats()
	if rec := st.Records.Load(); rec < uint64(changed) || rec > uint64(changed)+uint64(changed)/10 {
		t.Errorf("copied %d records for %d changed keys (store holds %d)", rec, changed, len(ra))
	}
	if f.Keys != st.Records.Load() || f.G < g {
		t.Errorf("final progress %+v: keys %d (stats %d), cursor below the last write %d", f, f.Keys, st.Records.Load(), g)
	}
	sa := a.Node(0).CatchupStats()
	if sa.ServedFromPeers.Load() == 0 {
		t.Errorf("the serving node lacked only-on-two but served nothing read from a peer")
	}
	// Small values come with the serving node's own index scan: every
	// record but those it read from a peer, without a point read.
	if in, rec, peer := sa.ServedInline.Load(), sa.ServedRecords.Load(), sa.ServedFromPeers.Load(); in != rec-peer {
		t.Errorf("served %d records inline, want %d of %d (%d read from peers)", in, rec-peer, rec, peer)
	}
	// The source measures the stream it served (TCP_INFO), once the
	// driver has read its tail (the parked connection's first ping); its
	// busy time may round to 0 on loopback (the kernel counts in jiffies).
	testenv.WaitFor(t, 5*time.Second, "the source reports the served stream", func() bool {
		return a.Node(0).CatchupStats().ServedStreams.Load() == 1
	})
	if m := promText(t, a.Node(0)); !strings.Contains(m, "\nsdnkvs_kvs_catchup_served_streams_total 1\n") ||
		!strings.Contains(m, "\nsdnkvs_kvs_catchup_served_sndbuf_limited_seconds_total ") || !strings.Contains(m, "\nsdnkvs_kvs_catchup_served_rwnd_limited_seconds_total ") {
		t.Errorf("/metrics lacks the served stream's counters:\n%s", m)
	}
	pc.mu.Lock()
	n := len(pc.all)
	pc.mu.Unlock()
	t.Logf("copied %d records (%d bytes) of %d keys, %d progress frames, %d pages", st.Records.Load(), st.Bytes.Load(), len(ra), n, st.Pages.Load())
}
