package kvs

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

var testOrderSecret = []byte("order-secret-for-tests-0123456789")

// seqCluster starts n sequenced nodes (majority quorum) on loopback.
func seqCluster(t testing.TB, n int, timeout time.Duration) *Cluster {
	t.Helper()
	return startCluster(t, "", n, timeout, func(c *Config, spare string) {
		c.OrderListen, c.OrderSecret, c.UnsequencedGrace = spare, testOrderSecret, 100*time.Millisecond
	})
}

// fakeSeq plays the middlebox's part of the order stream towards the nodes
// of one or more DCs: one authenticated order connection per node, a global
// clock handing out G, and STAMP frames sent before the bytes they cover.
type fakeSeq struct {
	t     testing.TB
	mu    sync.Mutex // orders G assignment with frame sends
	g     uint64
	epoch uint64
	conns map[string]*orderConn // by node order address
}

type orderConn struct {
	c       net.Conn
	applied atomic.Uint64
	done    chan struct{}
}

func newFakeSeq(t testing.TB, epoch, g0 uint64) *fakeSeq {
	return &fakeSeq{t: t, g: g0, epoch: epoch, conns: map[string]*orderConn{}}
}

// connect dials node n's order port, authenticates and says HELLO.
func (s *fakeSeq) connect(n *Node) *orderConn {
	s.t.Helper()
	c, err := net.Dial("tcp", n.OrderAddr())
	if err != nil {
		s.t.Fatal(err)
	}
	self := peerauth.Hello{Cluster: OrderCluster, Role: peerauth.RoleSequencer, ID: 1}
	if _, err := peerauth.Client(c, testOrderSecret, self, time.Now().Add(5*time.Second)); err != nil {
		c.Close()
		s.t.Fatalf("order handshake: %v", err)
	}
	oc := &orderConn{c: c, done: make(chan struct{})}
	go func() {
		defer close(oc.done)
		rd := orderwire.NewReader(c)
		var f orderwire.Frame
		for rd.ReadFrame(&f) == nil {
			if f.Type == orderwire.Applied {
				oc.applied.Store(f.G)
			}
		}
	}()
	s.t.Cleanup(func() { c.Close(); <-oc.done })
	s.mu.Lock()
	s.conns[n.OrderAddr()] = oc
	s.mu.Unlock()
	s.send(n, orderwire.Frame{Type: orderwire.Hello, Epoch: s.epoch, GFloor: s.g})
	testenv.WaitFor(s.t, 5*time.Second, "order connection counted", func() bool { return n.SeqStats().OrderConns.Load() >= 1 })
	return oc
}

func (s *fakeSeq) send(n *Node, frames ...orderwire.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sendLocked(n, frames...)
}

func (s *fakeSeq) sendLocked(n *Node, frames ...orderwire.Frame) {
	var b []byte
	for i := range frames {
		var err error
		if b, err = orderwire.Append(b, &frames[i]); err != nil {
			s.t.Errorf("encode %+v: %v", frames[i], err)
			return
		}
	}
	if _, err := s.conns[n.OrderAddr()].c.Write(b); err != nil {
		s.t.Errorf("order write: %v", err)
	}
}

// next hands out the next G.
func (s *fakeSeq) next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.g++
	return s.g
}

// flowOf is the flow of a client connection c to node n, as the node sees it.
func flowOf(t testing.TB, c net.Conn) orderwire.Flow {
	t.Helper()
	la := c.LocalAddr().(*net.TCPAddr)
	ra := c.RemoteAddr().(*net.TCPAddr)
	ip, _ := netip.AddrFromSlice(la.IP)
	f, ok := orderwire.FlowOf(netip.AddrPortFrom(ip, uint16(la.Port)), uint16(ra.Port))
	if !ok {
		t.Fatalf("not an IPv4 flow: %v", la)
	}
	return f
}

// rawConn is a RESP client that controls the bytes it sends, so a test knows
// every command's stream offsets.
type rawConn struct {
	t    testing.TB
	c    net.Conn
	r    *bufio.Reader
	off  uint64 // bytes written so far
	flow orderwire.Flow
}

func dialRaw(t testing.TB, n *Node) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c), flow: flowOf(t, c)}
}

func respCmd(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

// write sends b and returns the stream range it occupies.
func (r *rawConn) write(b []byte) (start, end uint64) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
	start = r.off
	r.off += uint64(len(b))
	return start, r.off
}

// reply reads one simple reply line (status, error, integer, or a bulk
// string's content; nil bulk as "(nil)").
func (r *rawConn) reply() string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.r.ReadString('\n')
	if err != nil {
		r.t.Fatalf("reading reply: %v", err)
	}
	line = line[:len(line)-2]
	if line[0] == '$' {
		if line == "$-1" {
			return "(nil)"
		}
		var n int
		fmt.Sscanf(line, "$%d", &n)
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r.r, b); err != nil {
			r.t.Fatal(err)
		}
		return string(b[:n])
	}
	return line
}

func stampFrame(f orderwire.Flow, start, end, g uint64) orderwire.Frame {
	return orderwire.Frame{Type: orderwire.Stamp, Flow: f, Start: start, End: end, G: g}
}

func openFrame(f orderwire.Flow) orderwire.Frame {
	return orderwire.Frame{Type: orderwire.Open, Flow: f}
}

// stampedTag is the tag a write ending at stream offset end gets with stamp g.
func stampedTag(g, end uint64) Tag { return Tag{Counter: g, Writer: stampedWriter | (end - 1)} }

// waitRecord waits until node i of c holds tag want for key.
func waitRecord(t testing.TB, c *Cluster, i int, key string, want Tag, wantVal string) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("node %d holds %s=%q at %v", i+1, key, wantVal, want), func() bool {
		tag, _, v, err := c.Node(i).LocalGet([]byte(key))
		return err == nil && tag == want && string(v) == wantVal
	})
}

// waitStamp waits until node n knows the stamp of byte off of flow f.
func waitStamp(t testing.TB, n *Node, f orderwire.Flow, off uint64) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, "stamp received", func() bool {
		_, res := n.seq.table.lookup(f, off)
		return res == stampFound
	})
}
