package kvs

import (
	"encoding/binary"
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

// progressLog collects a job's PROGRESS frames (StartCatchup's report).
type progressLog struct {
	mu     sync.Mutex
	frames []orderwire.Frame
}

func (p *progressLog) report(f orderwire.Frame) {
	p.mu.Lock()
	p.frames = append(p.frames, f)
	p.mu.Unlock()
}

func (p *progressLog) last() (orderwire.Frame, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.frames) == 0 {
		return orderwire.Frame{}, false
	}
	return p.frames[len(p.frames)-1], true
}

func (p *progressLog) waitEnd(t testing.TB, timeout time.Duration) orderwire.Frame {
	t.Helper()
	var f orderwire.Frame
	testenv.WaitFor(t, timeout, "job ends", func() bool {
		var ok bool
		f, ok = p.last()
		return ok && f.State != orderwire.JobRunning
	})
	return f
}

// fillA writes n keys of size bytes on every node of a, stamped from g0.
func fillA(t testing.TB, a *Cluster, n, size int, g0 uint64) uint64 {
	t.Helper()
	val := strings.Repeat("x", size)
	g := g0
	for i := 0; i < n; i++ {
		g++
		putOn(t, a, []int{0, 1, 2}, fmt.Sprintf("key%05d", i), stampTag(g), val, false)
	}
	return g
}

// assertConverged checks that b holds a's record for every key on a quorum.
func assertConverged(t testing.TB, a, b *Cluster) {
	t.Helper()
	ra, _ := dcRecords(t, a)
	rb, hb := dcRecords(t, b)
	bad := 0
	for k, want := range ra {
		if rb[k] != want || hb[k] < 2 {
			bad++
			if bad < 5 {
				t.Errorf("%s: B holds %+v on %d nodes, A %+v", k, rb[k], hb[k], want)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d keys differ", bad, len(ra))
	}
}

// TestCatchupSourceNodeKilled: the source node serving the job dies
// mid-job; the driver moves to the next node of the source DC and the job
// completes.
func TestCatchupSourceNodeKilled(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0)
	// 2000 records of 1 KiB pulled at 1 MiB/s in pages of 32 KiB: ~2 s.
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 32<<10, 0, func(c *Config) { c.CatchupRate = 1 << 20 })
	fillA(t, a, 2000, 1024, 5_000_000)
	var pl progressLog
	b.Node(0).StartCatchup(1, "A", Tag{}, pl.report)
	st := b.Node(0).CatchupStats()
	testenv.WaitFor(t, 20*time.Second, "a few pages pulled", func() bool { return st.Pages.Load() >= 3 })
	a.Stop(0) // the first address: the node serving the job
	f := pl.waitEnd(t, 60*time.Second)
	if f.State != orderwire.JobDone {
		t.Fatalf("job ended in state %d, want done", f.State)
	}
	if st.Failures.Load() == 0 {
		t.Errorf("no source failure counted although the serving node died")
	}
	if err := a.Restart(0); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "A reconnected", a.AllReady)
	assertConverged(t, a, b)
	// PROGRESS came at least every ProgressEvery (plus scheduling slack).
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if len(pl.frames) < 2 {
		t.Errorf("%d progress frames for a job of about 2 s", len(pl.frames))
	}
}

// TestCatchupDriverKilledResumes: the joining DC's driver dies mid-job; a
// new job on another node from the last reported cursor completes, and
// copies only what lies above that cursor.
func TestCatchupDriverKilledResumes(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0)
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 32<<10, 0, func(c *Config) { c.CatchupRate = 1 << 20 })
	const n = 2000
	fillA(t, a, n, 1024, 5_000_000)
	var pl progressLog
	b.Node(0).StartCatchup(1, "A", Tag{}, pl.report)
	testenv.WaitFor(t, 20*time.Second, "progress with a cursor", func() bool {
		f, ok := pl.last()
		return ok && f.Keys >= 400
	})
	b.Stop(0)
	f, _ := pl.last()
	if f.State != orderwire.JobRunning {
		t.Fatalf("job ended (state %d) before the driver was killed", f.State)
	}
	cursor := Tag{Counter: f.G, Writer: f.W}
	var pl2 progressLog
	b.Node(1).StartCatchup(2, "A", cursor, pl2.report)
	f2 := pl2.waitEnd(t, 60*time.Second)
	if f2.State != orderwire.JobDone {
		t.Fatalf("resumed job ended in state %d", f2.State)
	}
	if f2.Keys >= n || f2.Keys+f.Keys < n {
		t.Errorf("resumed job copied %d records after %d reported (of %d): not a resume from the cursor", f2.Keys, f.Keys, n)
	}
	if err := b.Restart(0); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "B reconnected", b.AllReady)
	assertConverged(t, a, b)
}

// TestCatchupReplacedAndStopped: a new CATCHUP replaces the running job
// (which reports nothing more); STOP ends a job without a final report.
func TestCatchupReplacedAndStopped(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0)
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 16<<10, 0, func(c *Config) { c.CatchupRate = 256 << 10 })
	fillA(t, a, 1000, 1024, 5_000_000)
	pc := dialOrder(t, b.Node(0))
	pc.send(t, catchupFrame(t, 1, Tag{}, "A"))
	testenv.WaitFor(t, 10*time.Second, "job 1 reports", func() bool { _, ok := pc.state(1); return ok })
	pc.send(t, catchupFrame(t, 2, Tag{}, "A"))
	testenv.WaitFor(t, 10*time.Second, "job 2 reports", func() bool { _, ok := pc.state(2); return ok })
	pc.send(t, orderwire.Frame{Type: orderwire.Stop, Job: 2})
	testenv.WaitFor(t, 10*time.Second, "no job runs", func() bool { return b.Node(0).CatchupStats().Running.Load() == 0 })
	time.Sleep(2 * ProgressEvery) // a stopped job must stay silent: let a stray report arrive
	for _, job := range []uint64{1, 2} {
		if f, _ := pc.state(job); f.State != orderwire.JobRunning {
			t.Errorf("job %d reported state %d after it was replaced or stopped", job, f.State)
		}
	}
	// Unknown source DC: the job fails at once.
	pc.send(t, catchupFrame(t, 3, Tag{}, "nowhere"))
	if f := waitJob(t, pc, 3, 10*time.Second); f.State != orderwire.JobFailed {
		t.Errorf("job from an unknown DC ended in state %d, want failed", f.State)
	}
}

// TestCatchupRemoteIsReadOnly: a node of another DC (same secret, role
// dc-reader) can read the catch-up stream but any other request, a write
// above all, drops its connection and changes nothing.
func TestCatchupRemoteIsReadOnly(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0)
	putOn(t, a, []int{0, 1, 2}, "k", stampTag(100), "v", false)
	dialAs := func(secret []byte, h peerauth.Hello) (net.Conn, error) {
		c, err := net.Dial("tcp", a.Config(0).PeerListen)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_, err = peerauth.Client(c, secret, h, time.Now().Add(5*time.Second))
		return c, err
	}
	reader := peerauth.Hello{Cluster: CatchupCluster, Role: roleDCReader, ID: 9}
	dial := func(secret []byte) (net.Conn, error) { return dialAs(secret, reader) }
	if _, err := dial([]byte("another-secret-that-is-long-enough")); err == nil {
		t.Fatal("a dc-reader with a wrong secret was accepted")
	}
	// A node role on the catch-up handshake, or a dc-reader on the DC's own
	// cluster handshake: refused.
	if _, err := dialAs(testSecret, peerauth.Hello{Cluster: CatchupCluster, Role: peerauth.RoleNode, ID: 2}); err == nil {
		t.Fatal("role node accepted on the catch-up handshake")
	}
	if _, err := dialAs(testSecret, peerauth.Hello{Cluster: "sdnkvs", Role: roleDCReader, ID: 9}); err == nil {
		t.Fatal("a dc-reader accepted on the cluster's own handshake")
	}
	for _, kind := range []byte{kindWrite, kindApply, kindTags, kindRead, kindScan, kindChanges, kindStatus} {
		c, err := dial(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		before := a.Node(0).CatchupStats().RemoteRefused.Load()
		var req []byte
		switch kind {
		case kindWrite:
			req = appendWriteReq(nil, 1, []byte("k"), stampTag(1<<40), 0, []byte("forged"))
		case kindApply: // a batch of records, as a DC peer's catch-up driver sends
			rec := binary.BigEndian.AppendUint16(nil, 1)
			rec = append(rec, 'k')
			rec = AppendTag(rec, stampTag(1<<40))
			rec = append(rec, 0)
			rec = binary.BigEndian.AppendUint32(rec, 6)
			req = appendApplyReq(nil, 1, Tag{}, append(rec, "forged"...))
		case kindTags: // a DC peer's stub check
			req = appendTagsReq(nil, 1, [][]byte{[]byte("k")})
		default:
			req = appendReadReq(nil, kind, 1, []byte("k"))
		}
		c.Write(req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Errorf("kind %d from a remote DC answered (%d bytes) instead of dropping the connection", kind, n)
		}
		if got := a.Node(0).CatchupStats().RemoteRefused.Load(); got != before+1 {
			t.Errorf("kind %d: remote refusals %d -> %d, want +1", kind, before, got)
		}
	}
	if tg, _, v, _ := a.Node(0).LocalGet([]byte("k")); tg != stampTag(100) || string(v) != "v" {
		t.Fatalf("record changed by a remote DC: %v %q", tg, v)
	}
	// The catch-up read itself works on the same kind of connection.
	c, err := dial(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	start := append([]byte{catchupStart}, AppendTag(nil, Tag{})...)
	start = append(start, 0, 1, 0, 0, 0, 0, 1, 0)
	c.Write(appendReadReq(nil, kindCatchup, 1, start))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	body, err := newFrameReader(c, maxCatchupFrame).next()
	if err != nil {
		t.Fatal(err)
	}
	var r response
	if err := decodeResp(body, &r); err != nil || r.status != statusOK || r.flags&flagTail == 0 {
		t.Fatalf("catch-up page: %+v, %v", r, err)
	}
	var rec scanRecord
	if _, err := nextScanRecord(r.val[TagSize+8:], &rec); err != nil || string(rec.key) != "k" || string(rec.val) != "v" {
		t.Fatalf("page record %q=%q: %v", rec.key, rec.val, err)
	}
}

// TestCatchupRateLimit: the pull respects --catchup-rate (loosely: the
// job takes at least half the time the rate implies).
func TestCatchupRateLimit(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0)
	const rate = 512 << 10
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 64<<10, 0, func(c *Config) { c.CatchupRate = rate })
	fillA(t, a, 1000, 2048, 5_000_000) // ~2 MiB: ~3 s beyond the 512 KiB burst
	var pl progressLog
	start := time.Now()
	b.Node(0).StartCatchup(1, "A", Tag{}, pl.report)
	f := pl.waitEnd(t, 60*time.Second)
	took := time.Since(start)
	if f.State != orderwire.JobDone {
		t.Fatalf("state %d", f.State)
	}
	want := time.Duration(float64(f.Bytes-rate) / rate * float64(time.Second))
	t.Logf("%d bytes in %v at a limit of %d B/s (%.0f B/s)", f.Bytes, took, rate, float64(f.Bytes)/took.Seconds())
	if took < want/2 {
		t.Errorf("pulled %d bytes in %v: faster than the limit allows (%v)", f.Bytes, took, want)
	}
}

// TestCatchupConnKeptBetweenPasses: a pass that reached the tail keeps its
// source connection, the next pass to the same node runs on it (no dial,
// no handshake, TCP's window kept), and a kept connection that went stale
// is replaced by a new one without failing the pass.
func TestCatchupConnKeptBetweenPasses(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0)
	b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 0, 0)
	g := fillA(t, a, 300, 100, 1_000_000)
	st := b.Node(0).CatchupStats()
	pass := func(job uint64, from Tag) orderwire.Frame {
		t.Helper()
		var pl progressLog
		b.Node(0).StartCatchup(job, "A", from, pl.report)
		f := pl.waitEnd(t, 60*time.Second)
		if f.State != orderwire.JobDone {
			t.Fatalf("pass %d: state %d", job, f.State)
		}
		return f
	}
	f := pass(1, Tag{})
	if st.Reused.Load() != 0 {
		t.Fatalf("first pass reused %d connections", st.Reused.Load())
	}
	// New writes, then a second pass from the first one's cursor.
	for i := 0; i < 50; i++ {
		g++
		putOn(t, a, []int{0, 1, 2}, fmt.Sprintf("later%03d", i), stampTag(g), "new", false)
	}
	f2 := pass(2, Tag{Counter: f.G, Writer: f.W})
	if got := st.Reused.Load(); got != 1 {
		t.Errorf("second pass: %d connections reused, want 1", got)
	}
	if f2.Keys != 50 {
		t.Errorf("second pass copied %d records, want the 50 new ones", f2.Keys)
	}
	assertConverged(t, a, b)
	// The kept connection goes stale: the third pass dials again.
	n := b.Node(0)
	n.catchConns.mu.Lock()
	cc := n.catchConns.parked
	n.catchConns.mu.Unlock()
	if cc == nil {
		t.Fatal("no connection kept after the second pass")
	}
	cc.c.Close()
	g++
	putOn(t, a, []int{0, 1, 2}, "last", stampTag(g), "v", false)
	fails := st.Failures.Load()
	if f3 := pass(3, Tag{Counter: f2.G, Writer: f2.W}); f3.Keys != 1 {
		t.Errorf("third pass copied %d records, want 1", f3.Keys)
	}
	if got := st.Failures.Load(); got != fails {
		t.Errorf("a stale kept connection counted as a source failure (%d -> %d)", fails, got)
	}
	assertConverged(t, a, b)
}

// TestCatchupWindowYields: with --catchup-target, the driver's local
// batches pass the delay-based window (catchup_window.go): at a target no
// queue can meet the window falls below one batch and the driver pauses
// between batches, and the job still copies every record to a quorum;
// with no target the window is the fixed one and never pauses.
func TestCatchupWindowYields(t *testing.T) {
	a := dcCluster(t, "A", nil, 0, 0)
	fillA(t, a, 150, 20000, 1_000_000) // one record a batch
	for _, tc := range []struct {
		target time.Duration
		pause  bool
	}{{time.Nanosecond, true}, {0, false}} {
		b := dcCluster(t, "B", map[string][]string{"A": peerAddrs(a)}, 0, 50, func(c *Config) {
			c.CatchupTarget, c.CatchupRate = tc.target, 0
		})
		st := b.Node(0).CatchupStats()
		var pl progressLog
		b.Node(0).StartCatchup(1, "A", Tag{}, pl.report)
		if f := pl.waitEnd(t, 60*time.Second); f.State != orderwire.JobDone || f.Keys != 150 {
			t.Fatalf("target %v: state %d, %d keys", tc.target, f.State, f.Keys)
		}
		assertConverged(t, a, b)
		paused := time.Duration(st.Paused.Load())
		t.Logf("target %v: window %.3f, paused %v", tc.target, st.Window(), paused)
		if tc.pause && (paused == 0 || st.Window() >= 1) {
			t.Errorf("target %v: window %.3f, paused %v; want below one batch, with pauses", tc.target, st.Window(), paused)
		}
		if !tc.pause && paused != 0 {
			t.Errorf("no target: paused %v", paused)
		}
		if m := promText(t, b.Node(0)); tc.pause && (strings.Contains(m, "\nsdnkvs_kvs_catchup_paused_seconds_total 0\n") || !strings.Contains(m, "\nsdnkvs_kvs_catchup_window_batches ")) {
			t.Errorf("/metrics lacks the window or the time paused:\n%s", m)
		}
	}
}
