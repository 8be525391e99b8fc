package kvs

import (
	"fmt"
	"math/rand/v2"
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

// BenchmarkVerify measures a verify pass over a store whose records all
// sit below the cursor (so its incremental part copies nothing), with a
// few corrupt records in the joining DC, next to the baseline from the
// same run that a repair without digests would need: a full pass from the
// start of the order (every record over the WAN). It reports both times
// and the bytes each received from the source.
//
//	go test ./kvs -run X -bench BenchmarkVerify -benchtime 1x
func BenchmarkVerify(b *testing.B) {
	const n, corrupt = 200000, 10
	var verSec, fullSec float64
	var verBytes, fullBytes uint64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		a := dcCluster(b, "A", nil, 0, 0)
		dst := dcCluster(b, "B", map[string][]string{"A": peerAddrs(a)}, 0, 0, func(c *Config) { c.CatchupRate = 0 })
		fillNodes(b, a, []int{0, 1, 2}, n, 32)
		fillNodes(b, dst, []int{0, 1, 2}, n, 32)
		bad := map[string]dcRec{}
		for j := 0; j < corrupt; j++ {
			k := fmt.Sprintf("key:%08d", j*(n/corrupt))
			bad[k] = dcRec{tag: stampTag(uint64(1_000_000 + j*(n/corrupt))), val: "corrupt"}
		}
		putMany(b, dst, []int{0, 1, 2}, bad, true)
		cursor := stampTag(uint64(1_000_000 + n))
		st := dst.Node(0).CatchupStats()
		b.StartTimer()

		var pl progressLog
		start := time.Now()
		dst.Node(0).StartCatchupVerify(1, "A", cursor, uint64(1_000_000+n), pl.report)
		if f := pl.waitEnd(b, 10*time.Minute); f.State != orderwire.JobDone {
			b.Fatalf("verify job state %d", f.State)
		}
		verSec += time.Since(start).Seconds()
		verBytes += st.VerifyBytes.Load()
		if got := st.VerifyRepaired.Load(); got != corrupt {
			b.Fatalf("repaired %d of %d", got, corrupt)
		}

		bytes0 := st.Bytes.Load()
		var pl2 progressLog
		start = time.Now()
		dst.Node(0).StartCatchup(2, "A", Tag{}, pl2.report)
		f := pl2.waitEnd(b, 10*time.Minute)
		if f.State != orderwire.JobDone || f.Keys < n {
			b.Fatalf("full pass state %d, %d keys", f.State, f.Keys)
		}
		fullSec += time.Since(start).Seconds()
		// Record data plus the page framing (key length, tag, flags,
		// value length: 23 bytes a record).
		fullBytes += st.Bytes.Load() - bytes0 + 23*f.Keys
		b.StopTimer()
	}
	k := float64(b.N)
	b.ReportMetric(verSec/k, "verify_s")
	b.ReportMetric(float64(verBytes)/k/1e6, "verify_MB")
	b.ReportMetric(fullSec/k, "fullpass_s")
	b.ReportMetric(float64(fullBytes)/k/1e6, "fullpass_MB")
	b.ReportMetric(verSec/fullSec, "verify/fullpass_time")
	b.ReportMetric(float64(verBytes)/float64(fullBytes), "verify/fullpass_bytes")
}

// BenchmarkCatchupPage measures the source's page build (the index merge
// over the DC's quorum and the records' reads, in tag order: random in key
// order) over 300,000 records of 32 B, next to the baseline from the same
// run: one sequential scan of the same records in key order (scanRecords),
// the fastest read of them there is.
//
//	go test ./kvs -run X -bench BenchmarkCatchupPage -benchtime 1x
func BenchmarkCatchupPage(b *testing.B) {
	const n = 300000
	a := dcCluster(b, "A", nil, 0, 0)
	r := rand.New(rand.NewPCG(1, 2))
	puts := make([]testPut, n)
	for i := range puts {
		puts[i] = testPut{key: fmt.Appendf(nil, "key:%010d", r.IntN(1<<30)), tag: stampTag(uint64(1_000_000 + i)), val: []byte(strings.Repeat("v", 32))}
	}
	for _, i := range []int{0, 1, 2} {
		putAll(b, a.Node(i).store, puts)
	}
	node := a.Node(0)
	var pageSec, scanSec float64
	recs := 0
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for cursor := (Tag{}); ; {
			out, end, tail, err := node.catchupPage(cursor, CatchupPageBytes, CatchupPageRecords, false, Tag{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			for p := out[TagSize+8:]; len(p) > 0; recs++ {
				var rec scanRecord
				p, _ = nextScanRecord(p, &rec)
			}
			cursor = end
			if tail {
				break
			}
		}
		pageSec += time.Since(start).Seconds()
		start = time.Now()
		if err := node.store.scanRecords(nil, nil, true, func([]byte, Tag, byte, []byte) bool { return true }); err != nil {
			b.Fatal(err)
		}
		scanSec += time.Since(start).Seconds()
	}
	k := float64(b.N)
	b.ReportMetric(float64(recs)/pageSec, "page_rec/s")
	b.ReportMetric(float64(n)*k/scanSec, "scan_rec/s")
	b.ReportMetric(scanSec/pageSec, "page/scan")
}
