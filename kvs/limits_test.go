package kvs

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func startOne(t *testing.T, mod func(*Config)) *Node {
	t.Helper()
	ports := freePorts(t, 2)
	cfg := Config{ID: 1, InMemory: true, Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		PeerListen: fmt.Sprintf("127.0.0.1:%d", ports[1]), Timeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func mgetCmd(n int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n$4\r\nMGET\r\n", n+1)
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k%d", i)
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(k), k)
	}
	return []byte(b.String())
}

// TestMGetPoolDrain: the two pipelined MGETs of 16,385 keys, sent
// over and over, fail fast and leave the op pool to other clients: every
// victim GET succeeds.
func TestMGetPoolDrain(t *testing.T) {
	c := testCluster(t, 3, 2, 2*time.Second)
	stop := make(chan struct{})
	var abuses atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		big := mgetCmd(16385)
		mid := mgetCmd(1500)
		for {
			select {
			case <-stop:
				return
			default:
			}
			conn, err := net.Dial("tcp", c.Config(0).Listen)
			if err != nil {
				return
			}
			rd := bufio.NewReader(conn)
			// Over the key limit: an error, the connection stays.
			conn.Write(append(append([]byte(nil), mid...), mid...))
			for i := 0; i < 2; i++ {
				if line, _ := rd.ReadString('\n'); !strings.HasPrefix(line, "-ERR too many keys") {
					t.Errorf("MGET of 1500 keys answered %q", line)
				}
			}
			// Over the argument limit: refused from the header alone,
			// the connection is closed.
			conn.Write(append(append([]byte(nil), big...), big...))
			if line, _ := rd.ReadString('\n'); !strings.HasPrefix(line, "-ERR Protocol error: too many arguments") {
				t.Errorf("MGET of 16385 keys answered %q", line)
			}
			conn.Close()
			abuses.Add(1)
		}
	}()
	rc := client(t, c, 0)
	testenv.WaitFor(t, 10*time.Second, "abuse running", func() bool { return abuses.Load() > 2 })
	for i := 0; i < 300; i++ {
		if err := rc.Get(bg, fmt.Sprintf("v%d", i)).Err(); err != nil && err.Error() != "redis: nil" {
			t.Fatalf("victim GET %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestUnreadRepliesBounded: 256 pipelined GETs of a 1 MiB value whose
// replies are never read: the node closes the client when a write misses
// its deadline instead of buffering 256 MiB of replies.
func TestUnreadRepliesBounded(t *testing.T) {
	n := startOne(t, func(c *Config) { c.WriteTimeout = 300 * time.Millisecond; c.InMemory, c.Dir = false, t.TempDir() })
	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	val := strings.Repeat("v", 1<<20)
	fmt.Fprintf(conn, "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n%s\r\n", len(val), val)
	rd := bufio.NewReader(conn)
	if line, _ := rd.ReadString('\n'); line != "+OK\r\n" {
		t.Fatalf("SET: %q", line)
	}
	conn.Write([]byte(strings.Repeat("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n", 256)))
	testenv.WaitFor(t, 30*time.Second, "slow client closed", func() bool { return n.Stats().SlowClients.Load() == 1 })
}

// TestTrickledMultibulk: a command arriving one argument per read is parsed
// once: the parser's work grows with the arguments, not with arguments
// times reads (the trickle pinned a core).
func TestTrickledMultibulk(t *testing.T) {
	const args = 2000
	cmd := mgetCmd(args - 1)
	p := newRESPParser(1<<20, 1<<20)
	start, end, reads := 0, 0, 0
	for end < len(cmd) {
		end = min(end+7, len(cmd)) // a few bytes per read
		reads++
		used, res := p.next(cmd[start:end])
		start += used
		if res == resCommand {
			if len(p.args) != args || string(p.args[args-1]) != fmt.Sprintf("k%d", args-2) {
				t.Fatalf("parsed %d args", len(p.args))
			}
			if end != len(cmd) {
				t.Fatal("command complete before its last byte")
			}
			if p.headers > 2*(args+reads) {
				t.Fatalf("%d length lines parsed for %d args over %d reads: re-parsing from the start", p.headers, args, reads)
			}
			return
		}
		if res != resNeedMore {
			t.Fatalf("result %v", res)
		}
	}
	t.Fatal("command never completed")
}

func TestMaxClientsAndIdleTimeout(t *testing.T) {
	n := startOne(t, func(c *Config) { c.MaxClients = 2; c.IdleTimeout = 300 * time.Millisecond })
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("PING\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, _ := bufio.NewReader(c).ReadString('\n'); line != "+PONG\r\n" {
			t.Fatalf("client %d: %q", i, line)
		}
		conns = append(conns, c)
	}
	c3, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(c3).ReadString('\n'); !strings.Contains(line, "max number of clients") {
		t.Fatalf("third client: %q", line)
	}
	// Idle clients are closed: a read sees EOF well before our deadline.
	conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("idle client not closed: %v", err)
	}
}
