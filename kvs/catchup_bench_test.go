package kvs

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// fillNodes stores n records (value of size bytes, stamped tags) on the
// given nodes' replicas directly, concurrently.
func fillNodes(b testing.TB, c *Cluster, nodes []int, n, size int) {
	b.Helper()
	val := strings.Repeat("v", size)
	var puts []testPut
	for i := 0; i < n; i++ {
		puts = append(puts, testPut{key: fmt.Appendf(nil, "key:%08d", i), tag: stampTag(uint64(1_000_000 + i)), val: []byte(val)})
	}
	for _, i := range nodes {
		putAll(b, c.Node(i).store, puts)
	}
}

// BenchmarkCatchup measures a catch-up job's pull rate on loopback (source
// DC A of 3 nodes, joining DC B of 3 nodes, every record written at B's
// quorum) next to the baseline from the same run: the learners' whole-store
// copy (syncFrom) of the same records from one peer into one empty replica.
//
//	go test ./kvs -run X -bench BenchmarkCatchup -benchtime 1x
func BenchmarkCatchup(b *testing.B) {
	for _, sz := range []struct {
		name    string
		n, size int
	}{{"small", 20000, 16}, {"64KiB", 256, 64 << 10}} {
		b.Run(sz.name, func(b *testing.B) {
			var catchSec, syncSec float64
			var bytes int
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				a := dcCluster(b, "A", nil, 0, 0)
				fillNodes(b, a, []int{0, 1, 2}, sz.n, sz.size)
				dst := dcCluster(b, "B", map[string][]string{"A": peerAddrs(a)}, 0, 0, func(c *Config) { c.CatchupRate = 0 })
				base := dcCluster(b, "C", nil, 0, 0)
				fillNodes(b, base, []int{1, 2}, sz.n, sz.size)
				b.StartTimer()

				var pl progressLog
				start := time.Now()
				dst.Node(0).StartCatchup(1, "A", Tag{}, pl.report)
				f := pl.waitEnd(b, 10*time.Minute)
				catchSec += time.Since(start).Seconds()
				if f.State != orderwire.JobDone || f.Keys != uint64(sz.n) {
					b.Fatalf("job state %d, %d keys of %d", f.State, f.Keys, sz.n)
				}
				bytes = int(f.Bytes)

				start = time.Now()
				got, err := base.Node(0).syncFrom(base.Node(0).peers[0])
				syncSec += time.Since(start).Seconds()
				if err != nil || got != int64(sz.n) {
					b.Fatalf("syncFrom: %d records, %v", got, err)
				}
				b.StopTimer()
			}
			k := float64(b.N)
			b.ReportMetric(float64(sz.n)*k/catchSec, "catchup_rec/s")
			b.ReportMetric(float64(bytes)*k/catchSec/1e6, "catchup_MB/s")
			b.ReportMetric(float64(sz.n)*k/syncSec, "syncFrom_rec/s")
			b.ReportMetric(float64(bytes)*k/syncSec/1e6, "syncFrom_MB/s")
			b.ReportMetric(syncSec/catchSec, "catchup/syncFrom")
		})
	}
}
