package kvs

import (
	"context"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sdnkvs/sdnkvs/internal/linmodel"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// stampingConn is a client connection whose every Write is stamped by the
// fake sequencer before its bytes leave, as the middlebox stamps a
// first-seen segment before forwarding it: a write acknowledged before
// another began therefore has the lower G.
type stampingConn struct {
	net.Conn
	seq  *fakeSeq
	node *Node
	flow orderwire.Flow
	mu   sync.Mutex
	off  uint64
}

func (s *fakeSeq) dialStamping(n *Node) (net.Conn, error) {
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		return nil, err
	}
	sc := &stampingConn{Conn: c, seq: s, node: n, flow: flowOf(s.t, c)}
	s.send(n, openFrame(sc.flow))
	return sc, nil
}

func (c *stampingConn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.seq
	s.mu.Lock()
	s.g++
	s.sendLocked(c.node, stampFrame(c.flow, c.off, c.off+uint64(len(b)), s.g))
	s.mu.Unlock()
	n, err := c.Conn.Write(b)
	c.off += uint64(n)
	return n, err
}

// Porcupine over a 3-node sequenced cluster: concurrent clients write
// through stamped connections (one round per write) to every node and read
// on plain connections; the history must be linearizable, and every write
// must have been sequenced.
func TestSeqLinearizable(t *testing.T) {
	c := seqCluster(t, 3, 3*time.Second)
	seq := newFakeSeq(t, 1, uint64(time.Now().UnixNano()))
	for i := 0; i < c.Len(); i++ {
		seq.connect(c.Node(i))
	}
	const nClients, nKeys, target = 8, 4, 2000
	h := &history{start: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for ci := 0; ci < nClients; ci++ {
		n := c.Node(ci % c.Len())
		wr := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, PoolSize: 1, ReadTimeout: 10 * time.Second,
			Dialer: func(context.Context, string, string) (net.Conn, error) { return seq.dialStamping(n) }})
		rd := redis.NewClient(&redis.Options{Addr: c.Node((ci + 1) % c.Len()).Addr(), MaxRetries: -1, PoolSize: 1, ReadTimeout: 10 * time.Second})
		t.Cleanup(func() { wr.Close(); rd.Close() })
		wg.Add(1)
		go func(ci int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(ci), 11))
			for op := 0; ; op++ {
				select {
				case <-stop:
					return
				default:
				}
				in := randomInput(r, ci, op, nKeys)
				call := h.now()
				out, _, err := apply(wr, rd, in)
				ret := h.now()
				if err != nil {
					// A loaded machine may miss a deadline (outcome unknown);
					// any other error (a refused or unstamped write) fails.
					if !strings.Contains(err.Error(), "quorum timeout") {
						t.Errorf("client %d %c: %v", ci, in.Op, err)
					}
					h.fail.Add(1)
					if in.Op == linmodel.Get {
						continue
					}
					ret = math.MaxInt64
				} else {
					h.ok.Add(1)
				}
				h.add(ci, in, call, out, ret)
			}
		}(ci)
	}
	h.wg = &wg
	waitOps(t, h, target)
	close(stop)
	wg.Wait()
	var writes, refused uint64
	for i := 0; i < c.Len(); i++ {
		writes += c.Node(i).SeqStats().Writes.Load()
		refused += c.Node(i).SeqStats().Refused.Load() + c.Node(i).SeqStats().StampTimeouts.Load()
	}
	if writes < uint64(target)/4 || refused != 0 {
		t.Fatalf("sequenced writes %d, refused or timed out %d", writes, refused)
	}
	checkLinearizable(t, h)
}
