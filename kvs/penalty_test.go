package kvs

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// sendProtoErr sends a command refused from its header alone.
func sendProtoErr(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte("*100000\r\n$4\r\nMGET\r\n"))
	return c, bufio.NewReader(c)
}

// protoErr sends a protocol error and checks its -ERR reply.
func protoErr(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, rd := sendProtoErr(t, addr)
	wantProtoErr(t, c, rd)
	return c
}

func wantProtoErr(t *testing.T, c net.Conn, rd *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, _ := rd.ReadString('\n'); !strings.HasPrefix(line, "-ERR Protocol error: too many arguments") {
		t.Fatalf("oversized MGET answered %q", line)
	}
}

// closedNow reports whether the node has closed c (a read sees EOF or a
// reset); it waits at most d, so "false" means "still open after d".
func closedNow(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// silent reports whether nothing (no byte, no close) arrives on c within d.
func silent(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestProtocolErrorPenalty: a source IP's first protoErrBurst protocol
// errors are answered and closed at once; the next one is held open,
// unanswered (and counted) until the node closes; meanwhile a well-behaved client from the
// same IP is served, and the held connection does not count as a client.
func TestProtocolErrorPenalty(t *testing.T) {
	hp := freePorts(t, 1)[0]
	n := startOne(t, func(c *Config) {
		c.ProtoErrRate, c.ProtoErrHold, c.MaxClients = 0.001, time.Hour, 1
		c.HTTPListen = fmt.Sprintf("127.0.0.1:%d", hp)
	})
	for i := 0; i < protoErrBurst; i++ {
		if c := protoErr(t, n.Addr()); !closedNow(c, 10*time.Second) {
			t.Fatalf("protocol error %d (within the burst) not closed", i)
		}
	}
	if got := n.Stats().ProtoHeld.Load(); got != 0 {
		t.Fatalf("%d connections held within the burst", got)
	}
	held, _ := sendProtoErr(t, n.Addr())
	if !silent(held, 300*time.Millisecond) {
		t.Fatal("protocol error over the budget: answered or closed at once, not held")
	}
	if got := n.Stats().ProtoHeld.Load(); got != 1 {
		t.Fatalf("ProtoHeld = %d, want 1", got)
	}
	if m := metricsOf(t, n); !strings.Contains(m, "\nsdnkvs_kvs_protocol_error_clients_held_total 1\n") {
		t.Fatalf("/metrics lacks the held connection:\n%s", m)
	}
	// MaxClients is 1: a served client proves the held one is not counted.
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("PING\r\n"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, _ := bufio.NewReader(c).ReadString('\n'); line != "+PONG\r\n" {
		t.Fatalf("client from the held IP: %q", line)
	}
	n.Close()
	if !closedNow(held, 10*time.Second) {
		t.Fatal("held connection not closed by Node.Close")
	}
}

// TestProtocolErrorPenaltyDisabled: a negative hold never holds.
func TestProtocolErrorPenaltyDisabled(t *testing.T) {
	n := startOne(t, func(c *Config) { c.ProtoErrRate = 0.001; c.ProtoErrHold = -1 })
	for i := 0; i < 2*protoErrBurst; i++ {
		if c := protoErr(t, n.Addr()); !closedNow(c, 10*time.Second) {
			t.Fatalf("protocol error %d not closed with the penalty disabled", i)
		}
	}
	if got := n.Stats().ProtoHeld.Load(); got != 0 {
		t.Fatalf("ProtoHeld = %d with the penalty disabled", got)
	}
}

// TestPenaltyBoxBounds: held connections are bounded by maxHeld and the
// per-IP table by maxPenaltyIPs.
func TestPenaltyBoxBounds(t *testing.T) {
	p := newPenaltyBox(0.001, time.Hour)
	now := time.Now()
	a := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}
	held := 0
	for i := 0; i < protoErrBurst+maxHeld+10; i++ {
		if p.take(a, now) {
			held++
		}
	}
	if held != maxHeld {
		t.Fatalf("held %d connections, want the cap %d", held, maxHeld)
	}
	p.release()
	if !p.take(a, now) {
		t.Fatal("a released slot was not reused")
	}
	// An IPv4 address and its IPv4-mapped IPv6 form share one budget.
	q := newPenaltyBox(0.001, time.Hour)
	for i := 0; i < protoErrBurst; i++ {
		if q.take(a, now) {
			t.Fatalf("error %d within the burst held", i)
		}
	}
	if !q.take(&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 2}, now) {
		t.Fatal("the IPv4-mapped form of an exhausted IP got a fresh budget")
	}
	for i := 0; i < 3*maxPenaltyIPs; i++ {
		p.take(&net.TCPAddr{IP: net.IPv4(11, byte(i>>16), byte(i>>8), byte(i)), Port: 1}, now)
		if len(p.ips) > maxPenaltyIPs {
			t.Fatalf("%d IPs remembered, cap %d", len(p.ips), maxPenaltyIPs)
		}
	}
}

// TestProtocolErrorPenaltyEnds: past its hold, a held connection gets its
// -ERR and is closed.
func TestProtocolErrorPenaltyEnds(t *testing.T) {
	n := startOne(t, func(c *Config) { c.ProtoErrRate, c.ProtoErrHold = 0.001, 50*time.Millisecond })
	for i := 0; i < protoErrBurst; i++ {
		protoErr(t, n.Addr())
	}
	c, rd := sendProtoErr(t, n.Addr())
	wantProtoErr(t, c, rd)
	if !closedNow(c, 10*time.Second) {
		t.Fatal("held connection not closed after its answer")
	}
	if got := n.Stats().ProtoHeld.Load(); got != 1 {
		t.Fatalf("ProtoHeld = %d, want 1", got)
	}
}
