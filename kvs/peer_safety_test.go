package kvs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// rawPeer dials node i's peer port; with secret it runs the handshake
// claiming to be node id.
func rawPeer(t *testing.T, c *Cluster, i int, secret []byte, id uint64) (net.Conn, error) {
	t.Helper()
	conn, err := net.Dial("tcp", c.Config(i).PeerListen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if secret != nil {
		_, err = peerauth.Client(conn, secret, peerauth.Hello{Cluster: "sdnkvs", Role: peerauth.RoleNode, ID: id},
			time.Now().Add(5*time.Second))
	}
	return conn, err
}

// sendWrite writes one kindWrite frame and returns the response's held tag,
// or an error when the node dropped the connection.
func sendWrite(conn net.Conn, key string, tg Tag, val string) (Tag, error) {
	if _, err := conn.Write(appendWriteReq(nil, 77, []byte(key), tg, 0, []byte(val))); err != nil {
		return Tag{}, err
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	fr := newFrameReader(conn, 1<<20)
	body, err := fr.next()
	if err != nil {
		return Tag{}, err
	}
	var r response
	if err := decodeResp(body, &r); err != nil {
		return Tag{}, err
	}
	if r.status != statusOK {
		return r.tag, errors.New("status error")
	}
	return r.tag, nil
}

var maxTag = Tag{Counter: math.MaxUint64, Writer: math.MaxUint64}

// TestForgedPeerFrameWithoutSecret: the attack, one kindWrite
// frame with tag (2^64-1, 2^64-1) sent to the peer port. It must not be
// stored, and later SETs keep working.
func TestForgedPeerFrameWithoutSecret(t *testing.T) {
	c := testCluster(t, 3, 2, 2*time.Second)
	conn, _ := rawPeer(t, c, 1, nil, 0)
	if _, err := sendWrite(conn, "acct", maxTag, "forged"); err == nil {
		t.Fatal("an unauthenticated peer frame was answered")
	}
	testenv.WaitFor(t, 5*time.Second, "handshake failure counted", func() bool {
		return c.Node(1).Stats().PeerAuthFail.Load() > 0
	})
	if tg, _, _, _ := c.Node(1).LocalGet([]byte("acct")); !tg.IsZero() {
		t.Fatalf("forged record stored: tag %v", tg)
	}
	rc := client(t, c, 0)
	if err := rc.Set(bg, "acct", "300", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := client(t, c, 2).Get(bg, "acct").Result(); err != nil || v != "300" {
		t.Fatalf("GET after SET: %q, %v", v, err)
	}
}

// TestForgedPeerWithSecret: a holder of the secret still cannot join as a
// non-member, nor write a tag whose writer is not a member or whose counter
// would overflow.
func TestForgedPeerWithSecret(t *testing.T) {
	c := testCluster(t, 3, 2, 2*time.Second)
	if _, err := rawPeer(t, c, 0, testSecret, 9); !errors.Is(err, peerauth.ErrRefused) || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("non-member handshake: %v", err)
	}
	if _, err := rawPeer(t, c, 0, []byte("a-wrong-secret-0123456789"), 2); !errors.Is(err, peerauth.ErrAuth) {
		t.Fatalf("wrong secret: %v", err)
	}
	for _, tg := range []Tag{
		maxTag,                        // counter overflows, writer not a member
		{Counter: 5, Writer: 9 << 48}, // writer 9 is not a member
		{Counter: MaxCounter + 1, Writer: 2 << 48},
		{Counter: 5, Writer: stampedBit | 5}, // stamped tag on a node not in sequenced mode
	} {
		conn, err := rawPeer(t, c, 0, testSecret, 2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sendWrite(conn, "k", tg, "forged"); err == nil {
			t.Fatalf("write with tag %+v accepted", tg)
		}
	}
	if got := c.Node(0).Stats().BadTags.Load(); got != 4 {
		t.Fatalf("BadTags = %d, want 4", got)
	}
	if tg, _, _, _ := c.Node(0).LocalGet([]byte("k")); !tg.IsZero() {
		t.Fatalf("forged record stored: %v", tg)
	}
}

// TestTagCounterExhausted: with the largest valid counter held by a quorum,
// a SET fails instead of wrapping to 0 and answering +OK while the old
// value stays.
func TestTagCounterExhausted(t *testing.T) {
	c := testCluster(t, 3, 2, 2*time.Second)
	top := Tag{Counter: MaxCounter, Writer: 2<<48 | 1}
	for i := 0; i < 3; i++ {
		conn, err := rawPeer(t, c, i, testSecret, uint64((i+1)%3+1))
		if err != nil {
			t.Fatal(err)
		}
		if held, err := sendWrite(conn, "x", top, "top"); err != nil || held != top {
			t.Fatalf("node %d: held %v, %v", i+1, held, err)
		}
	}
	rc := client(t, c, 0)
	err := rc.Set(bg, "x", "new", 0).Err()
	if err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Fatalf("SET at the end of the counter space: %v, want an error", err)
	}
	if v, _ := rc.Get(bg, "x").Result(); v != "top" {
		t.Fatalf("GET = %q, want the stored value", v)
	}
}

// TestIDMismatchRefusedAtStart: the "ids 1, 1 and 3": the second
// node, started with --id 1, finds that the peer list gives id 1 another
// address and refuses to start.
func TestIDMismatchRefusedAtStart(t *testing.T) {
	c := testCluster(t, 3, 2, 2*time.Second)
	cfg := c.Config(1)
	c.Stop(1)
	cfg.ID = 1
	cfg.Dir = filepath.Join(t.TempDir(), "dup")
	if n, err := Start(cfg); err == nil {
		n.Close()
		t.Fatal("a node with a duplicate id started")
	} else if !strings.Contains(err.Error(), "peer list gives this node") {
		t.Fatalf("error does not explain: %v", err)
	}
}

// TestIDCollisionInHandshake: a process that claims node 1's id on node
// 1's own peer port (a second node 1 with another peer list) is detected
// by both, and both refuse writes.
func TestIDCollisionInHandshake(t *testing.T) {
	c := testCluster(t, 3, 2, 2*time.Second)
	ports := freePorts(t, 2)
	impostor := Config{ID: 1, Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), PeerListen: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Peers: []string{"1=" + fmt.Sprintf("127.0.0.1:%d", ports[1]), "2=" + c.Config(0).PeerListen}, Quorum: 2,
		InMemory: true, PeerSecret: testSecret, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	n, err := Start(impostor)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	testenv.WaitFor(t, 10*time.Second, "collision detected on both", func() bool {
		return n.collision.Load() && c.Node(0).collision.Load()
	})
	if n.Ready() || c.Node(0).Ready() {
		t.Fatal("a node with a colliding id reports ready")
	}
	if err := client(t, c, 0).Set(bg, "k", "v", 0).Err(); err == nil || !strings.Contains(err.Error(), "collision") {
		t.Fatalf("SET on a colliding node: %v", err)
	}
}

func TestMultiNodeNeedsSecret(t *testing.T) {
	ports := freePorts(t, 2)
	_, err := Start(Config{ID: 1, InMemory: true, Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), PeerListen: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Peers: []string{fmt.Sprintf("127.0.0.1:%d", ports[1]), "127.0.0.1:1", "127.0.0.1:2"}})
	if err == nil || !strings.Contains(err.Error(), "--peer-secret-file") {
		t.Fatalf("multi-node node without a secret: %v", err)
	}
}

// TestPprofNotOnReadinessPort: /debug/pprof is not served on the readiness
// address, only on an explicit loopback debug listener.
func TestPprofNotOnReadinessPort(t *testing.T) {
	ports := freePorts(t, 3)
	cfg := Config{ID: 1, InMemory: true, Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), PeerListen: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		HTTPListen: fmt.Sprintf("127.0.0.1:%d", ports[2]), DebugListen: "127.0.0.1:0"}
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	get := func(url string) int {
		r, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if code := get("http://" + n.HTTPAddr() + "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof on the readiness port: HTTP %d", code)
	}
	if code := get("http://" + n.DebugAddr() + "/debug/pprof/"); code != http.StatusOK {
		t.Fatalf("pprof on the debug port: HTTP %d", code)
	}
	cfg.DebugListen, cfg.Listen, cfg.PeerListen, cfg.HTTPListen = "0.0.0.0:0", "127.0.0.1:0", "127.0.0.1:0", ""
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("non-loopback debug listener: %v", err)
	}
}

// TestRequirePass: before AUTH every command but AUTH, HELLO and PING gets
// -NOAUTH; a wrong password gets -WRONGPASS; commands pipelined behind a
// good AUTH run.
func TestRequirePass(t *testing.T) {
	ports := freePorts(t, 2)
	n, err := Start(Config{ID: 1, InMemory: true, Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		PeerListen: fmt.Sprintf("127.0.0.1:%d", ports[1]), RequirePass: []byte("s3cret")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(conn)
	send := func(in string, want ...string) {
		t.Helper()
		conn.Write([]byte(in))
		for _, w := range want {
			line, err := rd.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, w) {
				t.Fatalf("after %q: got %q (%v), want prefix %q", in, line, err, w)
			}
		}
	}
	send("SET k v\r\n", "-NOAUTH")
	send("GET k\r\n", "-NOAUTH")
	send("PING\r\n", "+PONG")
	send("AUTH wrong\r\n", "-WRONGPASS")
	send("AUTH bob s3cret\r\n", "-WRONGPASS")
	send("GET k\r\n", "-NOAUTH")
	send("AUTH s3cret\r\nSET k v\r\nGET k\r\n", "+OK", "+OK", "$1", "v")
	conn2, _ := net.Dial("tcp", n.Addr())
	defer conn2.Close()
	conn2.SetDeadline(time.Now().Add(10 * time.Second))
	conn2.Write([]byte("HELLO 2 AUTH default s3cret\r\nGET k\r\n"))
	rd2 := bufio.NewReader(conn2)
	line, _ := rd2.ReadString('\n')
	if !strings.HasPrefix(line, "*14") {
		t.Fatalf("HELLO with AUTH: %q", line)
	}
	for i := 0; i < 25; i++ { // the rest of the HELLO map
		rd2.ReadString('\n')
	}
	if line, _ := rd2.ReadString('\n'); line != "$1\r\n" {
		t.Fatalf("GET after HELLO AUTH: %q", line)
	}
}

// TestIDCollisionFromAnotherAddress: nodes on distinct addresses
// (127.0.0.11-13); a process on 127.0.0.14 claiming node 1's id, with a
// peer list of its own, is refused by node 3 because node 1 connects from
// 127.0.0.11.
func TestIDCollisionFromAnotherAddress(t *testing.T) {
	ports := freePorts(t, 8)
	var peers []string
	for i := 0; i < 3; i++ {
		peers = append(peers, fmt.Sprintf("127.0.0.%d:%d", 11+i, ports[3+i]))
	}
	dir := t.TempDir()
	var cfgs []Config
	for i := 0; i < 3; i++ {
		cfgs = append(cfgs, Config{ID: i + 1, Listen: fmt.Sprintf("127.0.0.%d:%d", 11+i, ports[i]), PeerListen: peers[i],
			Peers: peers, Dir: filepath.Join(dir, fmt.Sprint(i)), PeerSecret: testSecret,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}
	c, err := StartNodes(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testenv.WaitFor(t, 10*time.Second, "cluster formed", c.AllReady)
	impostor := Config{ID: 1, Listen: fmt.Sprintf("127.0.0.14:%d", ports[6]), PeerListen: fmt.Sprintf("127.0.0.14:%d", ports[7]),
		Peers: []string{"1=" + fmt.Sprintf("127.0.0.14:%d", ports[7]), "3=" + peers[2]}, Quorum: 2, InMemory: true,
		PeerSecret: testSecret, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	n, err := Start(impostor)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	testenv.WaitFor(t, 10*time.Second, "impostor refused", func() bool { return c.Node(2).Stats().IDCollisions.Load() > 0 })
	if n.Ready() {
		t.Fatal("the impostor reaches a quorum")
	}
	if err := client(t, c, 2).Set(bg, "k", "v", 0).Err(); err != nil {
		t.Fatalf("the real cluster stopped working: %v", err)
	}
}
