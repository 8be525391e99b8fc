package kvs

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"
	"github.com/sdnkvs/sdnkvs/internal/linmodel"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

type history struct {
	mu    sync.Mutex
	ops   []porcupine.Operation
	start time.Time
	ok    atomic.Int64
	fail  atomic.Int64
	wg    *sync.WaitGroup
}

func waitOps(t *testing.T, h *history, n int64) {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("%d successful operations", n), func() bool { return h.ok.Load() >= n })
}

// waitDone waits for the clients (already told to stop) to return.
func waitDone(t *testing.T, h *history) *history {
	h.wg.Wait()
	return h
}

func (h *history) now() int64 { return time.Since(h.start).Nanoseconds() }

// runClients runs nClients clients, each sending random GET/SET/DEL on keys
// over the cluster's nodes until stop is closed. A client that gets an error
// moves to the next node. Failed reads are dropped; failed writes are kept
// with an unknown outcome (they may have taken effect at any later time).
func runClients(t *testing.T, c *Cluster, nClients, nKeys int, stop <-chan struct{}) *history {
	var addrs []string
	for i := 0; i < c.Len(); i++ {
		addrs = append(addrs, c.Config(i).Listen)
	}
	return runClientsAt(t, addrs, 15*time.Second, nClients, nKeys, stop)
}

// runClientsAt is runClients against RESP addresses, with a read timeout.
func runClientsAt(t *testing.T, addrs []string, readTimeout time.Duration, nClients, nKeys int, stop <-chan struct{}) *history {
	h := &history{start: time.Now()}
	var wg sync.WaitGroup
	// quit stops the clients when the test ends early (a t.Fatal before
	// the test closes stop must not leave the cleanup waiting for ever).
	quit := make(chan struct{})
	for ci := 0; ci < nClients; ci++ {
		clients := make([]*redis.Client, len(addrs))
		for i := range clients {
			rc := redis.NewClient(&redis.Options{Addr: addrs[i], MaxRetries: -1,
				DialTimeout: time.Second, ReadTimeout: readTimeout, PoolSize: 4})
			t.Cleanup(func() { rc.Close() })
			clients[i] = rc
		}
		wg.Add(1)
		go func(ci int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(ci), 7))
			node := ci % len(addrs)
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				case <-quit:
					return
				default:
				}
				rc := clients[node]
				in := randomInput(r, ci, seq, nKeys)
				call := h.now()
				out, n, err := apply(rc, rc, in)
				if err == nil && in.Op == linmodel.Del && n != 1 {
					t.Errorf("DEL of one key answered %d", n)
				}
				ret := h.now()
				if err != nil {
					h.fail.Add(1)
					if !strings.Contains(err.Error(), "no quorum") && !strings.Contains(err.Error(), "timeout") &&
						!strings.Contains(err.Error(), "connection") && !strings.Contains(err.Error(), "EOF") &&
						!strings.Contains(err.Error(), "broken pipe") && !strings.Contains(err.Error(), "reset") {
						t.Errorf("unexpected error kind: %v", err)
					}
					node = (node + 1) % len(addrs)
					if in.Op == linmodel.Get {
						continue
					}
					ret = math.MaxInt64 // outcome unknown
				} else {
					h.ok.Add(1)
				}
				h.add(ci, in, call, out, ret)
			}
		}(ci)
	}
	h.wg = &wg
	t.Cleanup(func() { close(quit); wg.Wait() })
	return h
}

// randomInput is client ci's operation number seq on one of nKeys keys:
// half GETs, 40% SETs of a value unique to it, 10% DELs.
func randomInput(r *rand.Rand, ci, seq, nKeys int) linmodel.Input {
	in := linmodel.Input{Key: fmt.Sprintf("k%d", r.IntN(nKeys))}
	switch p := r.IntN(10); {
	case p < 5:
		in.Op = linmodel.Get
	case p < 9:
		in.Op, in.Value = linmodel.Set, fmt.Sprintf("c%d-%d", ci, seq)
	default:
		in.Op = linmodel.Del
	}
	return in
}

// apply sends in, a GET to rd, a SET or DEL to wr. A GET returns the value
// read ("" when absent), a DEL the number of keys it removed.
func apply(wr, rd *redis.Client, in linmodel.Input) (string, int64, error) {
	switch in.Op {
	case linmodel.Get:
		v, err := rd.Get(bg, in.Key).Result()
		if errors.Is(err, redis.Nil) {
			return "", 0, nil
		}
		return v, 0, err
	case linmodel.Set:
		return "", 0, wr.Set(bg, in.Key, in.Value, 0).Err()
	default:
		n, err := wr.Del(bg, in.Key).Result()
		return "", n, err
	}
}

// add records an operation (ret math.MaxInt64: its outcome is unknown).
func (h *history) add(ci int, in linmodel.Input, call int64, out string, ret int64) {
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: ci, Input: in, Call: call, Output: out, Return: ret})
	h.mu.Unlock()
}

func checkLinearizable(t *testing.T, h *history) {
	t.Helper()
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	res, path := linmodel.Check(ops, 60*time.Second, t.TempDir())
	t.Logf("%d operations (%d ok, %d failed), linearizability: %v", len(ops), h.ok.Load(), h.fail.Load(), res)
	if res != porcupine.Ok {
		t.Fatalf("history is not linearizable (%v); visualization in %s", res, path)
	}
}

func TestLinearizable(t *testing.T) {
	c := testCluster(t, 9, 5, time.Second)
	stop := make(chan struct{})
	h := runClients(t, c, 10, 5, stop)
	waitOps(t, h, 3000)
	close(stop)
	checkLinearizable(t, waitDone(t, h))
}

func TestLinearizableWithFailures(t *testing.T) {
	c := testCluster(t, 9, 5, 500*time.Millisecond)
	stop := make(chan struct{})
	h := runClients(t, c, 10, 5, stop)
	r := rand.New(rand.NewPCG(42, 1))
	down := map[int]bool{}
	kills, restarts := 0, 0
	for round := 0; round < 24; round++ {
		target := h.ok.Load() + 500
		waitOps(t, h, target)
		if len(down) < 4 && (len(down) == 0 || r.IntN(2) == 0) {
			i := r.IntN(c.Len())
			if !down[i] {
				down[i] = true
				if err := c.Stop(i); err != nil {
					t.Fatal(err)
				}
				kills++
			}
		} else {
			for i := range down {
				delete(down, i)
				if err := c.Restart(i); err != nil {
					t.Fatal(err)
				}
				restarts++
				break
			}
		}
	}
	for i := range down {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	waitOps(t, h, h.ok.Load()+300)
	close(stop)
	t.Logf("%d kills, %d restarts", kills, restarts)
	checkLinearizable(t, waitDone(t, h))
}
