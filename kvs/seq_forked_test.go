package kvs

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// dialFrom dials node n from local address from (port 0: any), with
// SO_REUSEADDR so one client port can reach the nodes of several DCs, as a
// forked connection does through the middlebox.
func dialFrom(t *testing.T, n *Node, from *net.TCPAddr) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: from, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c), flow: flowOf(t, c)}
}

// On a forked connection (announced on the order stream) the commands whose
// answer used to name the node (INFO, HELLO, CLIENT ID) answer the same
// bytes in every DC, and SDNKVS.DIGEST and SCAN (one node's store) are
// refused alike, so one client sending them on the forked port cannot
// make the middlebox drop a DC for a reply mismatch; on a connection the
// order stream never announced (anycast, direct) they still name the node.
func TestSeqForkedRepliesNameNoNode(t *testing.T) {
	dcA := seqCluster(t, 3, 2*time.Second)
	dcB := seqCluster(t, 3, 2*time.Second)
	seq := newFakeSeq(t, 1, 1000)
	nA, nB := dcA.Node(0), dcB.Node(1)
	if nA.cfg.ID == nB.cfg.ID {
		nB = dcB.Node(2)
	}
	seq.connect(nA)
	seq.connect(nB)

	cA := dialFrom(t, nA, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	cB := dialFrom(t, nB, cA.c.LocalAddr().(*net.TCPAddr))
	cmds := [][]byte{respCmd("INFO"), respCmd("CLIENT", "ID"), respCmd("HELLO", "2"), respCmd("SDNKVS.DIGEST", "", "")}
	var stream []byte
	for _, c := range cmds {
		stream = append(stream, c...)
	}
	for _, c := range []*rawConn{cA, cB} {
		seq.send(c.n(nA, nB), openFrame(c.flow), stampFrame(c.flow, 0, uint64(len(stream)), seq.next()))
		waitStamp(t, c.n(nA, nB), c.flow, 0)
	}
	var replies [2][]byte
	for i, c := range []*rawConn{cA, cB} {
		c.write(stream)
		replies[i] = readReplies(t, c, len(cmds))
	}
	if string(replies[0]) != string(replies[1]) {
		t.Fatalf("forked replies differ between DCs:\n%q\n%q", replies[0], replies[1])
	}
	want := int64(127)<<40 | int64(1)<<16 | int64(cA.c.LocalAddr().(*net.TCPAddr).Port)
	if !strings.Contains(string(replies[0]), ":"+itoa(want)+"\r\n") || strings.Contains(string(replies[0]), "sdnkvs_node_id") ||
		!strings.Contains(string(replies[0]), "-ERR SDNKVS.DIGEST reads one node's store") {
		t.Fatalf("forked replies: want client id %d and no node id: %q", want, replies[0])
	}

	// Not announced: the node's own INFO and id.
	d := dialRaw(t, nA)
	d.write(append(respCmd("INFO"), respCmd("CLIENT", "ID")...))
	if got := d.reply(); !strings.Contains(got, "sdnkvs_node_id:"+itoa(int64(nA.cfg.ID))) {
		t.Fatalf("direct INFO: %q", got)
	}
	if got := d.reply(); got != ":"+itoa(int64(nA.cfg.ID)) {
		t.Fatalf("direct CLIENT ID: %q", got)
	}
}

// n returns whichever of a and b this connection dialed.
func (r *rawConn) n(a, b *Node) *Node {
	if r.c.RemoteAddr().String() == a.Addr() {
		return a
	}
	return b
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// readReplies reads n whole RESP replies from r and returns their bytes.
func readReplies(t *testing.T, r *rawConn, n int) []byte {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []byte
	var one func()
	one = func() {
		line, err := r.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading reply: %v", err)
		}
		out = append(out, line...)
		k, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		switch line[0] {
		case '$':
			if k >= 0 {
				b := make([]byte, k+2)
				if _, err := io.ReadFull(r.r, b); err != nil {
					t.Fatal(err)
				}
				out = append(out, b...)
			}
		case '*':
			for range k {
				one()
			}
		}
	}
	for range n {
		one()
	}
	return out
}

// seqNodeWith starts a sequenced 3-node cluster with mod applied to every
// node's config and returns its first node, order stream connected.
func seqNodeWith(t *testing.T, mod func(*Config)) (*Node, *fakeSeq) {
	t.Helper()
	c := startCluster(t, "", 3, 2*time.Second, func(c *Config, spare string) {
		c.OrderListen, c.OrderSecret, c.UnsequencedGrace = spare, testOrderSecret, 100*time.Millisecond
		mod(c)
	})
	seq := newFakeSeq(t, 1, 1000)
	seq.connect(c.Node(0))
	return c.Node(0), seq
}

// promText is n's /metrics page, from its handler (no HTTP listener).
func promText(t *testing.T, n *Node) string {
	t.Helper()
	rec := httptest.NewRecorder()
	n.metricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// freeLoopbackPort returns a loopback TCP port nothing listens on (for a
// client port the test announces on the order stream before dialing).
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestMaxClientsSparesForked: a node full of anycast or direct clients
// (--maxclients) still serves a forked connection of the sequenced port,
// whether its OPEN came before the connection or just after it, since the
// other DCs serve it and a refusal here would be a reply mismatch that
// drops this DC; a connection the order stream never announced is
// refused as before.
func TestMaxClientsSparesForked(t *testing.T) {
	n, seq := seqNodeWith(t, func(c *Config) { c.MaxClients = 2 })
	ping := respCmd("PING")
	for i := 0; i < 2; i++ {
		d := dialRaw(t, n)
		d.write(ping)
		if r := readReplies(t, d, 1); string(r) != "+PONG\r\n" {
			t.Fatalf("client %d: %q", i, r)
		}
	}
	over := dialRaw(t, n)
	over.write(ping)
	if r := readReplies(t, over, 1); !strings.HasPrefix(string(r), "-ERR max number of clients reached") {
		t.Fatalf("a third direct client: %q, want the max-clients error", r)
	}

	srv, err := netip.ParseAddrPort(n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	flowAt := func(port int) orderwire.Flow {
		f, ok := orderwire.FlowOf(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), srv.Port())
		if !ok {
			t.Fatal("flow")
		}
		return f
	}
	// OPEN before the connection, as the middlebox sends it.
	p1 := freeLoopbackPort(t)
	seq.send(n, openFrame(flowAt(p1)))
	testenv.WaitFor(t, 5*time.Second, "OPEN received", func() bool {
		_, res := n.seq.table.lookup(flowAt(p1), 0)
		return res != flowUnknown
	})
	f1 := dialFrom(t, n, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p1})
	f1.write(ping)
	if r := readReplies(t, f1, 1); string(r) != "+PONG\r\n" {
		t.Fatalf("forked connection over --maxclients: %q, want +PONG", r)
	}
	// OPEN just after the SYN (the order stream is another connection).
	p2 := freeLoopbackPort(t)
	go func() {
		time.Sleep(50 * time.Millisecond)
		seq.send(n, openFrame(flowAt(p2)))
	}()
	f2 := dialFrom(t, n, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p2})
	f2.write(ping)
	if r := readReplies(t, f2, 1); string(r) != "+PONG\r\n" {
		t.Fatalf("forked connection whose OPEN came after it: %q, want +PONG", r)
	}
	if got := n.stats.ForkedOverMax.Load(); got != 2 {
		t.Fatalf("forked connections over --maxclients counted %d, want 2", got)
	}
	if m := promText(t, n); !strings.Contains(m, "\nsdnkvs_kvs_forked_clients_over_max_total 2\n") {
		t.Fatalf("/metrics lacks the spared forked connections:\n%s", m)
	}
	if got := n.stats.Rejected.Load(); got != 1 {
		t.Fatalf("refused %d connections, want 1 (the direct one)", got)
	}
}

// TestMaxClientsPerIP: one source address holds at most
// --maxclients-per-ip connections to a node, so it cannot take all of
// --maxclients from other clients; another address is served, a closed
// connection frees its place, and a forked connection from the same
// address is spared (the middlebox bounds those per source).
func TestMaxClientsPerIP(t *testing.T) {
	n, seq := seqNodeWith(t, func(c *Config) { c.MaxClientsPerIP = 2 })
	ping := respCmd("PING")
	do := func(r *rawConn) string {
		r.write(ping)
		return string(readReplies(t, r, 1))
	}
	a1, a2 := dialFrom(t, n, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}), dialFrom(t, n, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	for _, r := range []*rawConn{a1, a2} {
		if got := do(r); got != "+PONG\r\n" {
			t.Fatalf("a client within its address's bound: %q", got)
		}
	}
	if got := do(dialFrom(t, n, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})); !strings.HasPrefix(got, "-ERR max number of clients per address reached") {
		t.Fatalf("a third connection from 127.0.0.1: %q, want the per-address error", got)
	}
	if got := do(dialFrom(t, n, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})); got != "+PONG\r\n" {
		t.Fatalf("a client from another address: %q", got)
	}
	// A forked connection from the full address is served.
	srv, err := netip.ParseAddrPort(n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	p := freeLoopbackPort(t)
	f, _ := orderwire.FlowOf(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p)), srv.Port())
	seq.send(n, openFrame(f))
	if got := do(dialFrom(t, n, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})); got != "+PONG\r\n" {
		t.Fatalf("a forked connection from a full address: %q", got)
	}
	// Closing one frees a place.
	a1.c.Close()
	testenv.WaitFor(t, 5*time.Second, "a place freed", func() bool {
		r := dialFrom(t, n, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		defer r.c.Close()
		return do(r) == "+PONG\r\n"
	})
	if got := n.stats.RejectedPerIP.Load(); got < 1 {
		t.Fatalf("refusals per address counted %d", got)
	}
	if m, want := promText(t, n), fmt.Sprintf("\nsdnkvs_kvs_clients_rejected_per_ip_total %d\n", n.stats.RejectedPerIP.Load()); !strings.Contains(m, want) {
		t.Fatalf("/metrics lacks %q:\n%s", strings.TrimSpace(want), m)
	}
}
