package kvs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkSeqWrite compares a SET's latency and throughput on the same
// 3-node cluster shape: ABD's two rounds (mode=abd) against one round with
// a stamped tag (mode=seq, a fake sequencer stamping every client write
// before its bytes leave, as the middlebox does). Clients run closed loops,
// one connection each, on random keys. Compare the modes as a ratio, per
// number of clients.
func BenchmarkSeqWrite(b *testing.B) {
	for _, clients := range []int{1, 16} {
		for _, mode := range []string{"abd", "seq"} {
			b.Run(fmt.Sprintf("clients=%d/mode=%s", clients, mode), func(b *testing.B) { benchSeqWrite(b, mode, clients) })
		}
	}
}

func benchSeqWrite(b *testing.B, mode string, clients int) {
	{
		{
			var c *Cluster
			var seq *fakeSeq
			if mode == "abd" {
				c = testCluster(b, 3, 0, 2*time.Second)
			} else {
				c = seqCluster(b, 3, 2*time.Second)
				seq = newFakeSeq(b, 1, uint64(time.Now().UnixNano()))
				for i := 0; i < c.Len(); i++ {
					seq.connect(c.Node(i))
				}
			}
			var mu sync.Mutex
			var lat []time.Duration
			var next sync.Mutex
			remaining := b.N
			take := func() bool {
				next.Lock()
				defer next.Unlock()
				remaining--
				return remaining >= 0
			}
			var wg sync.WaitGroup
			rcs := make([]*redis.Client, clients)
			for ci := range rcs {
				n := c.Node(ci % c.Len())
				opts := &redis.Options{Addr: n.Addr(), MaxRetries: -1, PoolSize: 1, ReadTimeout: 10 * time.Second}
				if seq != nil {
					opts.Dialer = func(context.Context, string, string) (net.Conn, error) { return seq.dialStamping(n) }
				}
				rcs[ci] = redis.NewClient(opts)
				if err := rcs[ci].Ping(bg).Err(); err != nil {
					b.Fatal(err)
				}
			}
			defer func() {
				for _, rc := range rcs {
					rc.Close()
				}
			}()
			b.ResetTimer()
			start := time.Now()
			for ci := range rcs {
				wg.Add(1)
				go func(ci int) {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(ci), 3))
					var my []time.Duration
					for take() {
						t0 := time.Now()
						if err := rcs[ci].Set(bg, fmt.Sprintf("key:%d", r.IntN(100000)), "value-of-some-bytes", 0).Err(); err != nil {
							b.Error(err)
							return
						}
						my = append(my, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, my...)
					mu.Unlock()
				}(ci)
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			if len(lat) == 0 {
				return
			}
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(float64(len(lat))/el.Seconds(), "sets/s")
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			if seq != nil {
				var waits, writes uint64
				var p99 time.Duration
				for i := 0; i < c.Len(); i++ {
					st := c.Node(i).SeqStats()
					waits += st.StampWaits.Load()
					writes += st.Writes.Load()
					p99 = max(p99, st.Wait.Quantile(0.99))
				}
				b.ReportMetric(float64(waits)/float64(max(writes, 1)), "stampwaits/set")
				b.ReportMetric(float64(p99.Microseconds()), "stampwait-p99-µs")
			}
		}
	}
}
