package kvs

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// A write whose stamp arrived before its bytes is stored in one round with
// the stamped tag on every replica, and the node reports it applied.
func TestSeqStampBeforeData(t *testing.T) {
	c := seqCluster(t, 3, 2*time.Second)
	n := c.Node(0)
	seq := newFakeSeq(t, 1, 1000)
	oc := seq.connect(n)
	rc := dialRaw(t, n)
	cmd := respCmd("SET", "k", "v1")
	seq.send(n, openFrame(rc.flow), stampFrame(rc.flow, 0, uint64(len(cmd)), 5000))
	waitStamp(t, n, rc.flow, uint64(len(cmd)-1))
	_, end := rc.write(cmd)
	if got := rc.reply(); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	want := stampedTag(5000, end)
	for i := 0; i < 3; i++ {
		waitRecord(t, c, i, "k", want, "v1")
	}
	st := n.SeqStats()
	if st.Writes.Load() != 1 || st.StampWaits.Load() != 0 || st.AppliedG.Load() != 5000 {
		t.Fatalf("stats: writes %d waits %d applied %d", st.Writes.Load(), st.StampWaits.Load(), st.AppliedG.Load())
	}
	testenv.WaitFor(t, 5*time.Second, "APPLIED 5000 reported", func() bool { return oc.applied.Load() == 5000 })
	// A read is served on the same connection and sees the write.
	rc.write(respCmd("GET", "k"))
	if got := rc.reply(); got != "v1" {
		t.Fatalf("GET: %q", got)
	}
}

// A write whose bytes arrive before their stamp waits for it.
func TestSeqStampAfterData(t *testing.T) {
	c := seqCluster(t, 3, 5*time.Second)
	n := c.Node(0)
	seq := newFakeSeq(t, 1, 1000)
	seq.connect(n)
	rc := dialRaw(t, n)
	seq.send(n, openFrame(rc.flow))
	start, end := rc.write(respCmd("SET", "late", "x"))
	testenv.WaitFor(t, 5*time.Second, "the write waiting for its stamp", n.seq.table.waiting)
	if tag, _, _, _ := n.LocalGet([]byte("late")); !tag.IsZero() {
		t.Fatalf("write applied before its stamp: %v", tag)
	}
	seq.send(n, stampFrame(rc.flow, start, end, 7777))
	if got := rc.reply(); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	waitRecord(t, c, 0, "late", stampedTag(7777, end), "x")
	st := n.SeqStats()
	if st.StampWaits.Load() != 1 || st.Wait.Count() != 1 {
		t.Fatalf("stamp waits %d, histogram count %d", st.StampWaits.Load(), st.Wait.Count())
	}
}

// A write whose stamp never arrives fails at its deadline and is never
// applied, not even when the stamp shows up later.
func TestSeqStampNever(t *testing.T) {
	c := seqCluster(t, 3, 300*time.Millisecond)
	n := c.Node(0)
	seq := newFakeSeq(t, 1, 1000)
	seq.connect(n)
	rc := dialRaw(t, n)
	seq.send(n, openFrame(rc.flow))
	start, end := rc.write(respCmd("SET", "lost", "x"))
	got := rc.reply()
	if !strings.HasPrefix(got, "-ERR sequencer stamp") {
		t.Fatalf("SET without stamp: %q", got)
	}
	if n.SeqStats().StampTimeouts.Load() != 1 {
		t.Fatalf("timeouts: %d", n.SeqStats().StampTimeouts.Load())
	}
	// The stamp arrives late; then a later write on the flow works.
	seq.send(n, stampFrame(rc.flow, start, end, 2000))
	cmd := respCmd("SET", "other", "y")
	s2, e2 := rc.write(cmd)
	seq.send(n, stampFrame(rc.flow, s2, e2, 2001))
	if got := rc.reply(); got != "+OK" {
		t.Fatalf("second SET: %q", got)
	}
	waitRecord(t, c, 0, "other", stampedTag(2001, e2), "y")
	for i := 0; i < 3; i++ {
		if tag, _, _, _ := c.Node(i).LocalGet([]byte("lost")); !tag.IsZero() {
			t.Fatalf("node %d applied the timed-out write: %v", i+1, tag)
		}
	}
}

// Pipelined commands in one segment (one G) get distinct tags ordered by
// their stream offsets, so the last SET of a key wins, as on one Redis.
func TestSeqPipelinedOneSegment(t *testing.T) {
	c := seqCluster(t, 3, 2*time.Second)
	n := c.Node(0)
	seq := newFakeSeq(t, 1, 1000)
	seq.connect(n)
	rc := dialRaw(t, n)
	a := respCmd("SET", "p", "1")
	b := respCmd("SET", "p", "2")
	d := respCmd("DEL", "q")
	m := respCmd("MSET", "q", "3", "r", "4")
	seg := append(append(append(append([]byte{}, a...), b...), d...), m...)
	seq.send(n, openFrame(rc.flow), stampFrame(rc.flow, 0, uint64(len(seg)), 9000))
	rc.write(seg)
	for i, want := range []string{"+OK", "+OK", ":1", "+OK"} {
		if got := rc.reply(); got != want {
			t.Fatalf("reply %d: %q, want %q", i, got, want)
		}
	}
	endB := uint64(len(a) + len(b))
	endM := uint64(len(seg))
	waitRecord(t, c, 0, "p", stampedTag(9000, endB), "2")
	waitRecord(t, c, 0, "q", stampedTag(9000, endM), "3")
	waitRecord(t, c, 0, "r", stampedTag(9000, endM), "4")
	if !(stampedTag(9000, uint64(len(a))).Compare(stampedTag(9000, endB)) < 0) {
		t.Fatal("pipelined tags not ordered by offset")
	}
}

// Two DCs fed the same stamps pick the same winner of concurrent writes,
// whatever order the writes reach them in.
func TestSeqTwoDCsSameWinner(t *testing.T) {
	dcA := seqCluster(t, 3, 2*time.Second)
	dcB := seqCluster(t, 3, 2*time.Second)
	seq := newFakeSeq(t, 1, 1000)
	nA, nB := dcA.Node(0), dcB.Node(1)
	seq.connect(nA)
	seq.connect(nB)
	for round := 0; round < 20; round++ {
		key := "race"
		// Writers x and y, each forked to both DCs (one connection per DC).
		xA, xB, yA, yB := dialRaw(t, nA), dialRaw(t, nB), dialRaw(t, nA), dialRaw(t, nB)
		vx, vy := "x"+string(rune('a'+round)), "y"+string(rune('a'+round))
		cx, cy := respCmd("SET", key, vx), respCmd("SET", key, vy)
		gx, gy := seq.next(), seq.next() // x's bytes reached the middlebox first
		if round%2 == 1 {
			gx, gy = gy, gx
		}
		for _, p := range []struct {
			n   *Node
			rc  *rawConn
			cmd []byte
			g   uint64
		}{{nA, xA, cx, gx}, {nB, xB, cx, gx}, {nA, yA, cy, gy}, {nB, yB, cy, gy}} {
			seq.send(p.n, openFrame(p.rc.flow), stampFrame(p.rc.flow, 0, uint64(len(p.cmd)), p.g))
		}
		// DC A gets x then y; DC B gets y then x.
		xA.write(cx)
		if got := xA.reply(); got != "+OK" {
			t.Fatal(got)
		}
		yA.write(cy)
		if got := yA.reply(); got != "+OK" {
			t.Fatal(got)
		}
		yB.write(cy)
		if got := yB.reply(); got != "+OK" {
			t.Fatal(got)
		}
		xB.write(cx)
		if got := xB.reply(); got != "+OK" {
			t.Fatal(got)
		}
		winner, wg, wlen := vx, gx, len(cx)
		if gy > gx {
			winner, wg, wlen = vy, gy, len(cy)
		}
		want := stampedTag(wg, uint64(wlen))
		for i := 0; i < 3; i++ {
			waitRecord(t, dcA, i, key, want, winner)
			waitRecord(t, dcB, i, key, want, winner)
		}
	}
}

// In sequenced mode a write on a connection that is not a sequenced flow is
// refused with a reason, and reads on it are served.
func TestSeqUnsequencedWriteRefused(t *testing.T) {
	c := seqCluster(t, 3, 2*time.Second)
	n := c.Node(0)
	rc := dialRaw(t, n)
	rc.write(respCmd("SET", "u", "1"))
	got := rc.reply()
	if !strings.Contains(got, "unsequenced write refused") || !strings.Contains(got, "middlebox") {
		t.Fatalf("unsequenced SET: %q", got)
	}
	rc.write(respCmd("DEL", "u"))
	if got := rc.reply(); !strings.Contains(got, "unsequenced write refused") {
		t.Fatalf("unsequenced DEL: %q", got)
	}
	rc.write(respCmd("GET", "u"))
	if got := rc.reply(); got != "(nil)" {
		t.Fatalf("GET: %q", got)
	}
	if r := n.SeqStats().Refused.Load(); r != 2 {
		t.Fatalf("refused: %d", r)
	}
	for i := 0; i < 3; i++ {
		if tag, _, _, _ := c.Node(i).LocalGet([]byte("u")); !tag.IsZero() {
			t.Fatalf("refused write applied on node %d", i+1)
		}
	}
	rc.write(respCmd("INFO"))
	if got := rc.reply(); got == "" {
		t.Fatal("no INFO")
	}
	info := n.info()
	if !strings.Contains(info, "sdnkvs_seq_unsequenced_refused:2") {
		t.Fatalf("INFO lacks the refusal counter:\n%s", info)
	}
}

// A sequencer restart (new epoch) drops the old epoch's stamps: a write on
// an old flow can no longer use them. A reconnect in the same epoch keeps
// them (the middlebox re-sends only unacknowledged ranges).
func TestSeqSequencerRestart(t *testing.T) {
	c := seqCluster(t, 3, 300*time.Millisecond)
	n := c.Node(0)
	seq1 := newFakeSeq(t, 1, 1000)
	oc1 := seq1.connect(n)
	rc := dialRaw(t, n)
	c1 := respCmd("SET", "e", "1")
	c2 := respCmd("SET", "e", "2")
	c3 := respCmd("SET", "e", "3")
	l1, l2 := uint64(len(c1)), uint64(len(c1)+len(c2))
	seq1.send(n, openFrame(rc.flow), stampFrame(rc.flow, 0, l1, 1001), stampFrame(rc.flow, l1, l2, 1002))
	rc.write(c1)
	if got := rc.reply(); got != "+OK" {
		t.Fatal(got)
	}
	// Reconnect, same epoch: the stamp of c2 (already announced) still counts.
	oc1.c.Close()
	testenv.WaitFor(t, 5*time.Second, "order conn closed", func() bool { return n.SeqStats().OrderConns.Load() == 0 })
	seq1b := newFakeSeq(t, 1, 1002)
	seq1b.connect(n)
	seq1b.send(n, openFrame(rc.flow))
	rc.write(c2)
	if got := rc.reply(); got != "+OK" {
		t.Fatalf("SET after same-epoch reconnect: %q", got)
	}
	waitRecord(t, c, 0, "e", stampedTag(1002, l2), "2")
	// Restart: epoch 2. The old flow's remaining stamps are gone; a stamp of
	// the new epoch is needed (and the new middlebox knows nothing of it).
	seq2 := newFakeSeq(t, 2, 5000)
	seq2.connect(n)
	rc.write(c3)
	if got := rc.reply(); !strings.HasPrefix(got, "-ERR") {
		t.Fatalf("SET on an old-epoch flow: %q", got)
	}
	waitRecord(t, c, 0, "e", stampedTag(1002, l2), "2")
	// A new flow of epoch 2 writes with higher G and wins.
	rc2 := dialRaw(t, n)
	seq2.send(n, openFrame(rc2.flow), stampFrame(rc2.flow, 0, uint64(len(c3)), 5001))
	rc2.write(c3)
	if got := rc2.reply(); got != "+OK" {
		t.Fatal(got)
	}
	waitRecord(t, c, 0, "e", stampedTag(5001, uint64(len(c3))), "3")
}

// The stamp table is bounded: ranges below the consumed offset are freed,
// flows close, and an OPEN of a reused 4-tuple starts afresh.
func TestSeqTableBounded(t *testing.T) {
	var st SeqStats
	tb := newStampTable(&st)
	tb.maxFlows = 4
	tb.maxRanges = 8
	tb.hello(1)
	f := orderwire.Flow{ClientIP: [4]byte{10, 0, 0, 1}, ClientPort: 1, NodePort: 6379}
	tb.attach(f)
	tb.open(f)
	for i := uint64(0); i < 20; i++ {
		tb.stamp(f, i*10, i*10+10, 100+i)
	}
	if _, r := tb.size(); r != 8 {
		t.Fatalf("ranges held %d, want the bound 8", r)
	}
	if st.StampsDropped.Load() != 12 {
		t.Fatalf("dropped %d", st.StampsDropped.Load())
	}
	if g, res := tb.lookup(f, 195); res != stampFound || g != 119 {
		t.Fatalf("lookup 195: %d %v", g, res)
	}
	if _, res := tb.lookup(f, 5); res != stampPending {
		t.Fatalf("dropped range still found: %v", res)
	}
	tb.consume(f, 170)
	if _, r := tb.size(); r != 3 {
		t.Fatalf("after consume(170): %d ranges, want 3", r)
	}
	// A re-sent range below the consumed offset is ignored; a conflicting
	// one is counted and ignored.
	tb.stamp(f, 150, 160, 115)
	tb.stamp(f, 180, 190, 999)
	if g, _ := tb.lookup(f, 185); g != 118 || st.StampConflicts.Load() != 1 {
		t.Fatalf("conflict handling: g=%d conflicts=%d", g, st.StampConflicts.Load())
	}
	// More flows than the bound: unattached flows are evicted.
	for p := uint16(2); p < 10; p++ {
		tb.open(orderwire.Flow{ClientIP: [4]byte{10, 0, 0, 1}, ClientPort: p, NodePort: 6379})
	}
	if fl, _ := tb.size(); fl != 4 {
		t.Fatalf("flows %d, want the bound 4", fl)
	}
	if _, res := tb.lookup(f, 185); res != stampFound {
		t.Fatal("attached flow evicted")
	}
	// CLOSE then detach frees the flow; a later OPEN of the same 4-tuple
	// starts with no stamps.
	tb.close(f)
	if _, res := tb.lookup(f, 185); res != stampFound {
		t.Fatal("closed flow freed while a connection uses it")
	}
	tb.detach(f)
	if _, res := tb.lookup(f, 185); res != flowUnknown {
		t.Fatal("closed flow kept after its connection left")
	}
	tb.open(f)
	if _, res := tb.lookup(f, 185); res != stampPending {
		t.Fatal("reused 4-tuple sees old stamps")
	}
	// The CLOSE of a flow is lost (order stream down): once its connection
	// left, a new connection on the same 4-tuple never sees its stamps,
	// whether its OPEN comes before or after it attaches.
	g := orderwire.Flow{ClientIP: [4]byte{10, 0, 0, 2}, ClientPort: 7, NodePort: 6379}
	for _, openFirst := range []bool{true, false} {
		tb.attach(g)
		tb.open(g)
		tb.stamp(g, 0, 100, 500)
		tb.detach(g)
		if openFirst {
			tb.open(g)
			tb.attach(g)
		} else {
			tb.attach(g)
			tb.open(g)
		}
		if _, res := tb.lookup(g, 50); res != stampPending {
			t.Fatalf("openFirst=%v: new incarnation sees old stamps (%v)", openFirst, res)
		}
		tb.stamp(g, 0, 10, 600)
		if v, res := tb.lookup(g, 5); res != stampFound || v != 600 {
			t.Fatalf("openFirst=%v: new stamp %d %v", openFirst, v, res)
		}
		tb.detach(g)
	}
	// A new epoch drops the flows of the old one.
	tb.hello(2)
	if fl, _ := tb.size(); fl != 0 {
		t.Fatalf("flows after new epoch: %d", fl)
	}
}

// A sequencer whose clock is below a G the node was already given (a lost
// or rolled-back state file) is refused: its stamps would order new writes
// before older ones. The node keeps the stamps it has.
func TestSeqClockBackRefused(t *testing.T) {
	c := seqCluster(t, 1, time.Second)
	n := c.Node(0)
	seq := newFakeSeq(t, 1, 1000)
	seq.connect(n)
	rc := dialRaw(t, n)
	cmd := respCmd("SET", "k", "1")
	seq.send(n, openFrame(rc.flow), stampFrame(rc.flow, 0, uint64(len(cmd)), 9000))
	waitStamp(t, n, rc.flow, uint64(len(cmd)-1))
	back := newFakeSeq(t, 2, 5000) // restarted without its state: floor 5000 < 9000
	oc, err := net.Dial("tcp", n.OrderAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	if _, err := peerauth.Client(oc, testOrderSecret, peerauth.Hello{Cluster: OrderCluster, Role: peerauth.RoleSequencer, ID: 2}, time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	b, _ := orderwire.Append(nil, &orderwire.Frame{Type: orderwire.Hello, Epoch: back.epoch, GFloor: back.g})
	oc.Write(b)
	testenv.WaitFor(t, 5*time.Second, "the backward clock refused", func() bool { return n.SeqStats().OrderBad.Load() == 1 })
	if _, res := n.seq.table.lookup(rc.flow, 0); res != stampFound {
		t.Fatal("the refused sequencer's HELLO dropped the current epoch's stamps")
	}
	rc.write(cmd)
	if got := rc.reply(); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
}

// A corrupt order stream or a wrong secret is refused and counted.
func TestSeqOrderStreamRejects(t *testing.T) {
	c := seqCluster(t, 1, time.Second)
	n := c.Node(0)
	seq := newFakeSeq(t, 1, 1)
	oc := seq.connect(n)
	oc.c.Write([]byte{byte(orderwire.Applied), 0, 8, 0, 0, 0, 0, 0, 0, 0, 1}) // APPLIED is node->middlebox only
	testenv.WaitFor(t, 5*time.Second, "bad frame counted", func() bool { return n.SeqStats().OrderBad.Load() == 1 })
	<-oc.done
	oc2 := seq.connect(n)
	oc2.c.Write([]byte{200, 0, 0})
	testenv.WaitFor(t, 5*time.Second, "unknown type counted", func() bool { return n.SeqStats().OrderBad.Load() == 2 })
	<-oc2.done
	// A wrong secret, or a node posing as the sequencer, never gets in.
	for _, h := range []struct {
		secret []byte
		role   string
	}{{[]byte("not-the-order-secret-at-all"), peerauth.RoleSequencer}, {testOrderSecret, peerauth.RoleNode}} {
		conn, err := net.Dial("tcp", n.OrderAddr())
		if err != nil {
			t.Fatal(err)
		}
		_, err = peerauth.Client(conn, h.secret, peerauth.Hello{Cluster: OrderCluster, Role: h.role, ID: 9}, time.Now().Add(5*time.Second))
		conn.Close()
		if err == nil {
			t.Fatalf("handshake with %+v accepted", h)
		}
	}
	testenv.WaitFor(t, 5*time.Second, "refused handshakes counted", func() bool { return n.SeqStats().OrderBad.Load() == 4 })
}

// The sequencer metrics are served on the node's HTTP port.
func TestSeqMetrics(t *testing.T) {
	ports := freePorts(t, 4)
	n, err := Start(Config{ID: 1, Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), PeerListen: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		HTTPListen: fmt.Sprintf("127.0.0.1:%d", ports[2]), OrderListen: fmt.Sprintf("127.0.0.1:%d", ports[3]),
		OrderSecret: testOrderSecret, InMemory: true, UnsequencedGrace: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	rc := dialRaw(t, n)
	rc.write(respCmd("SET", "m", "1"))
	if got := rc.reply(); !strings.Contains(got, "unsequenced") {
		t.Fatalf("SET: %q", got)
	}
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"sdnkvs_kvs_seq_unsequenced_refused_total 1", "sdnkvs_kvs_seq_stamp_wait_seconds_bucket", "sdnkvs_kvs_seq_applied_g 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

// A command spread over many segments (a value larger than the read
// buffer, sent in pieces) takes the stamp of the segment holding its last
// byte; the offsets survive buffer growth and partial reads.
func TestSeqLargeValueManySegments(t *testing.T) {
	c := seqCluster(t, 3, 5*time.Second)
	n := c.Node(0)
	seq := newFakeSeq(t, 1, 1000)
	seq.connect(n)
	rc := dialRaw(t, n)
	seq.send(n, openFrame(rc.flow))
	small := respCmd("SET", "before", "x")
	big := respCmd("SET", "big", strings.Repeat("v", 100_000))
	after := respCmd("SET", "after", "y")
	stream := append(append(append([]byte{}, small...), big...), after...)
	const seg = 1448
	g := uint64(2000)
	var gOfEnd = map[int]uint64{} // stream end offset of each command -> its stamp
	ends := []int{len(small), len(small) + len(big), len(stream)}
	for off := 0; off < len(stream); off += seg {
		end := min(off+seg, len(stream))
		g++
		for _, e := range ends {
			if e-1 >= off && e-1 < end {
				gOfEnd[e] = g
			}
		}
		seq.send(n, stampFrame(rc.flow, uint64(off), uint64(end), g))
		rc.write(stream[off:end])
	}
	for i := 0; i < 3; i++ {
		if got := rc.reply(); got != "+OK" {
			t.Fatalf("reply %d: %q", i, got)
		}
	}
	waitRecord(t, c, 0, "before", stampedTag(gOfEnd[ends[0]], uint64(ends[0])), "x")
	waitRecord(t, c, 0, "big", stampedTag(gOfEnd[ends[1]], uint64(ends[1])), strings.Repeat("v", 100_000))
	waitRecord(t, c, 0, "after", stampedTag(gOfEnd[ends[2]], uint64(ends[2])), "y")
	// Everything consumed: the flow holds no stamps any more.
	testenv.WaitFor(t, 5*time.Second, "stamps freed", func() bool { _, r := n.seq.table.size(); return r == 0 })
}
