package kvs

import (
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CatchupStats are a node's catch-up counters (driver and source side),
// safe for concurrent use.
type CatchupStats struct {
	Jobs       atomic.Uint64 // jobs started (CATCHUP frames accepted)
	JobsDone   atomic.Uint64 // jobs that reached the source's tail
	JobsFailed atomic.Uint64 // jobs given up (JobFailed reported)
	Running    atomic.Int64  // 1 while a job runs
	Records    atomic.Uint64 // records pulled and written at the local quorum
	Bytes      atomic.Uint64 // bytes of those records (keys and values)
	Pages      atomic.Uint64 // pages pulled
	Failures   atomic.Uint64 // source connections lost or refused (the job moves to the next source node)
	Reused     atomic.Uint64 // passes that ran on the connection kept from the previous pass
	// Stub pages (catchup_stub.go): records checked against this DC's
	// replicas without their values, and those fetched because fewer
	// than a quorum held them.
	Stubs       atomic.Uint64
	StubFetched atomic.Uint64
	rate        atomic.Uint64 // float64 bits: bytes/s of the running job
	Paused      atomic.Uint64 // ns the driver paused between batches (window below one batch, catchup_window.go)
	window      atomic.Uint64 // float64 bits: the running job's window (batches in flight)
	queued      atomic.Int64  // ns: the last batch's latency above the floor

	ServedPages     atomic.Uint64 // pages served to drivers
	ServedRecords   atomic.Uint64 // records in those pages
	ServedFromPeers atomic.Uint64 // records read from a DC peer because this node lacked them
	ServedInline    atomic.Uint64 // records sent from this node's change index scan, without a point read
	ServedStubs     atomic.Uint64 // records served as stubs (no value)
	ServeErrors     atomic.Uint64 // pages refused (no read quorum, storage errors)
	RemoteRefused   atomic.Uint64 // another DC's connections dropped for a request other than the catch-up read
	// Served streams, start to tail, measured by TCP_INFO
	// (catchup_stream_report.go): time with data in flight, and of it the
	// time the driver's receive window or this node's send buffer held
	// the stream back, in microseconds; retransmitted segments.
	ServedStreams  atomic.Uint64
	ServedBusyUs   atomic.Uint64
	ServedRwndUs   atomic.Uint64
	ServedSndbufUs atomic.Uint64
	ServedRetrans  atomic.Uint64

	// Verify passes (catchup_verify.go).
	Verifies       atomic.Uint64 // verify passes run by this node's jobs
	VerifyRanges   atomic.Uint64 // key ranges whose digests were compared
	VerifyListed   atomic.Uint64 // records compared one by one (in ranges whose digests differed)
	VerifyRepaired atomic.Uint64 // records repaired to the source's (replaced or removed)
	VerifyBytes    atomic.Uint64 // bytes of verify answers received from the source DC (digests, lists, fetched records)
	// VerifyPeerBytes: bytes of verify answers from this DC's peers
	// (catchup_verify_peers.go; they do not cross the WAN).
	VerifyPeerBytes atomic.Uint64
	VerifyServed    atomic.Uint64 // verify requests served to another DC
}

// Rate is the running job's pull rate in bytes per second (0 when idle).
func (s *CatchupStats) Rate() float64 { return math.Float64frombits(s.rate.Load()) }

func (s *CatchupStats) setRate(r float64) { s.rate.Store(math.Float64bits(r)) }

// Window is the running job's window in batches in flight (below 1: a
// duty cycle) and Queued the last batch's quorum latency above the floor.
func (s *CatchupStats) Window() float64 { return math.Float64frombits(s.window.Load()) }

// Queued is the delay the last batch met above the floor (catchup_window.go).
func (s *CatchupStats) Queued() time.Duration { return time.Duration(s.queued.Load()) }

func (s *CatchupStats) setWindow(a *applyWindow) {
	if a == nil || a.target <= 0 {
		return
	}
	s.window.Store(math.Float64bits(a.w))
	s.queued.Store(int64(a.queued))
}

// CatchupStats returns the node's catch-up counters.
func (n *Node) CatchupStats() *CatchupStats { return &n.catchStats }

// appendInfo renders the INFO "# Catchup" section.
func (s *CatchupStats) appendInfo(b *strings.Builder) {
	fmt.Fprintf(b, "\r\n# Catchup\r\nsdnkvs_catchup_jobs:%d\r\nsdnkvs_catchup_jobs_done:%d\r\nsdnkvs_catchup_jobs_failed:%d\r\nsdnkvs_catchup_running:%d\r\n",
		s.Jobs.Load(), s.JobsDone.Load(), s.JobsFailed.Load(), s.Running.Load())
	fmt.Fprintf(b, "sdnkvs_catchup_records:%d\r\nsdnkvs_catchup_bytes:%d\r\nsdnkvs_catchup_pages:%d\r\nsdnkvs_catchup_failures:%d\r\nsdnkvs_catchup_conns_reused:%d\r\nsdnkvs_catchup_rate_bytes_per_sec:%.0f\r\n",
		s.Records.Load(), s.Bytes.Load(), s.Pages.Load(), s.Failures.Load(), s.Reused.Load(), s.Rate())
	fmt.Fprintf(b, "sdnkvs_catchup_stubs:%d\r\nsdnkvs_catchup_stub_fetched:%d\r\nsdnkvs_catchup_served_stubs:%d\r\n",
		s.Stubs.Load(), s.StubFetched.Load(), s.ServedStubs.Load())
	fmt.Fprintf(b, "sdnkvs_catchup_window:%.3f\r\nsdnkvs_catchup_queued_ms:%.1f\r\nsdnkvs_catchup_paused_seconds:%.1f\r\n",
		s.Window(), float64(s.Queued())/1e6, float64(s.Paused.Load())/1e9)
	fmt.Fprintf(b, "sdnkvs_catchup_served_pages:%d\r\nsdnkvs_catchup_served_records:%d\r\nsdnkvs_catchup_served_from_peers:%d\r\nsdnkvs_catchup_served_inline:%d\r\nsdnkvs_catchup_serve_errors:%d\r\nsdnkvs_catchup_remote_refused:%d\r\n",
		s.ServedPages.Load(), s.ServedRecords.Load(), s.ServedFromPeers.Load(), s.ServedInline.Load(), s.ServeErrors.Load(), s.RemoteRefused.Load())
	fmt.Fprintf(b, "sdnkvs_catchup_served_streams:%d\r\nsdnkvs_catchup_served_busy_seconds:%.1f\r\nsdnkvs_catchup_served_rwnd_limited_seconds:%.1f\r\nsdnkvs_catchup_served_sndbuf_limited_seconds:%.1f\r\nsdnkvs_catchup_served_retransmits:%d\r\n",
		s.ServedStreams.Load(), float64(s.ServedBusyUs.Load())/1e6, float64(s.ServedRwndUs.Load())/1e6, float64(s.ServedSndbufUs.Load())/1e6, s.ServedRetrans.Load())
	fmt.Fprintf(b, "sdnkvs_catchup_verifies:%d\r\nsdnkvs_catchup_verify_ranges:%d\r\nsdnkvs_catchup_verify_listed:%d\r\nsdnkvs_catchup_verify_repaired:%d\r\nsdnkvs_catchup_verify_bytes:%d\r\nsdnkvs_catchup_verify_peer_bytes:%d\r\nsdnkvs_catchup_verify_served:%d\r\n",
		s.Verifies.Load(), s.VerifyRanges.Load(), s.VerifyListed.Load(), s.VerifyRepaired.Load(), s.VerifyBytes.Load(), s.VerifyPeerBytes.Load(), s.VerifyServed.Load())
}

// catchupCollector exports CatchupStats as sdnkvs_kvs_catchup_* metrics.
type catchupCollector struct {
	s     *CatchupStats
	descs []*prometheus.Desc
}

func newCatchupCollector(s *CatchupStats) *catchupCollector {
	c := &catchupCollector{s: s}
	for _, d := range catchupMetrics {
		c.descs = append(c.descs, prometheus.NewDesc("sdnkvs_kvs_catchup_"+d.name, d.help, nil, nil))
	}
	return c
}

var catchupMetrics = []struct {
	name, help string
	gauge      bool
	get        func(*CatchupStats) float64
}{
	{"jobs_total", "Catch-up jobs started on this node.", false, func(s *CatchupStats) float64 { return float64(s.Jobs.Load()) }},
	{"jobs_done_total", "Catch-up jobs that reached the source's tail.", false, func(s *CatchupStats) float64 { return float64(s.JobsDone.Load()) }},
	{"jobs_failed_total", "Catch-up jobs given up (the middlebox retries).", false, func(s *CatchupStats) float64 { return float64(s.JobsFailed.Load()) }},
	{"running", "1 while a catch-up job runs on this node.", true, func(s *CatchupStats) float64 { return float64(s.Running.Load()) }},
	{"records_total", "Records pulled from another DC and written at the local quorum.", false, func(s *CatchupStats) float64 { return float64(s.Records.Load()) }},
	{"bytes_total", "Bytes (keys and values) of those records.", false, func(s *CatchupStats) float64 { return float64(s.Bytes.Load()) }},
	{"pages_total", "Catch-up pages pulled.", false, func(s *CatchupStats) float64 { return float64(s.Pages.Load()) }},
	{"failures_total", "Source connections lost or refused during catch-up.", false, func(s *CatchupStats) float64 { return float64(s.Failures.Load()) }},
	{"conns_reused_total", "Catch-up passes that ran on the source connection kept from the previous pass.", false, func(s *CatchupStats) float64 { return float64(s.Reused.Load()) }},
	{"stubs_total", "Records a later pass checked against this DC's replicas as stubs (key and tag, no value), over a range the DC had copied.", false, func(s *CatchupStats) float64 { return float64(s.Stubs.Load()) }},
	{"stub_fetched_total", "Stubs whose record fewer than a quorum of this DC's replicas held: fetched from the source DC and written.", false, func(s *CatchupStats) float64 { return float64(s.StubFetched.Load()) }},
	{"served_stubs_total", "Records served to another DC as stubs (no value).", false, func(s *CatchupStats) float64 { return float64(s.ServedStubs.Load()) }},
	{"rate_bytes_per_second", "Pull rate of the running catch-up job.", true, func(s *CatchupStats) float64 { return s.Rate() }},
	{"window_batches", "The running job's window: local batches in flight (below 1: one batch, then a pause), set by --catchup-target.", true, func(s *CatchupStats) float64 { return s.Window() }},
	{"queued_seconds", "The last catch-up batch's quorum latency above its floor: the delay the copy adds to live writes.", true, func(s *CatchupStats) float64 { return s.Queued().Seconds() }},
	{"paused_seconds_total", "Time the catch-up driver paused between batches to keep the delay it adds under --catchup-target.", false, func(s *CatchupStats) float64 { return float64(s.Paused.Load()) / 1e9 }},
	{"served_pages_total", "Catch-up pages served to another DC.", false, func(s *CatchupStats) float64 { return float64(s.ServedPages.Load()) }},
	{"served_records_total", "Records in those pages.", false, func(s *CatchupStats) float64 { return float64(s.ServedRecords.Load()) }},
	{"served_from_peers_total", "Served records read from a DC peer because this node lacked them.", false, func(s *CatchupStats) float64 { return float64(s.ServedFromPeers.Load()) }},
	{"served_inline_total", "Served records whose value came with this node's change index scan (small values), without a point read.", false, func(s *CatchupStats) float64 { return float64(s.ServedInline.Load()) }},
	{"serve_errors_total", "Catch-up pages refused (no read quorum, storage errors).", false, func(s *CatchupStats) float64 { return float64(s.ServeErrors.Load()) }},
	{"remote_refused_total", "Connections of another DC dropped for a request other than the catch-up read.", false, func(s *CatchupStats) float64 { return float64(s.RemoteRefused.Load()) }},
	{"served_streams_total", "Catch-up streams served to another DC's driver, measured from start to tail.", false, func(s *CatchupStats) float64 { return float64(s.ServedStreams.Load()) }},
	{"served_busy_seconds_total", "Time served catch-up streams had data in flight (TCP_INFO busy time).", false, func(s *CatchupStats) float64 { return float64(s.ServedBusyUs.Load()) / 1e6 }},
	{"served_rwnd_limited_seconds_total", "Of that time, the time the driver's receive window held the stream back (raise net.ipv4.tcp_rmem's maximum on the joining DC).", false, func(s *CatchupStats) float64 { return float64(s.ServedRwndUs.Load()) / 1e6 }},
	{"served_sndbuf_limited_seconds_total", "Of that time, the time this node's socket send buffer held the stream back (raise net.ipv4.tcp_wmem's maximum).", false, func(s *CatchupStats) float64 { return float64(s.ServedSndbufUs.Load()) / 1e6 }},
	{"served_retransmits_total", "TCP segments served catch-up streams retransmitted.", false, func(s *CatchupStats) float64 { return float64(s.ServedRetrans.Load()) }},
	{"verifies_total", "Verify passes (whole-store digest comparison with the source DC) run by this node's jobs.", false, func(s *CatchupStats) float64 { return float64(s.Verifies.Load()) }},
	{"verify_ranges_total", "Key ranges whose digests a verify pass compared.", false, func(s *CatchupStats) float64 { return float64(s.VerifyRanges.Load()) }},
	{"verify_listed_total", "Records a verify pass compared one by one (in ranges whose digests differed).", false, func(s *CatchupStats) float64 { return float64(s.VerifyListed.Load()) }},
	{"verify_repaired_total", "Records a verify pass repaired to the source DC's quorum record (replaced or removed).", false, func(s *CatchupStats) float64 { return float64(s.VerifyRepaired.Load()) }},
	{"verify_bytes_total", "Bytes of verify answers received from the source DC (digests, lists, fetched records).", false, func(s *CatchupStats) float64 { return float64(s.VerifyBytes.Load()) }},
	{"verify_peer_bytes_total", "Bytes of verify answers received from this DC's other replicas (digests and lists; they do not cross the WAN).", false, func(s *CatchupStats) float64 { return float64(s.VerifyPeerBytes.Load()) }},
	{"verify_served_total", "Verify requests (digest, list, fetch) served to another DC.", false, func(s *CatchupStats) float64 { return float64(s.VerifyServed.Load()) }},
}

func (c *catchupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *catchupCollector) Collect(ch chan<- prometheus.Metric) {
	for i, m := range catchupMetrics {
		t := prometheus.CounterValue
		if m.gauge {
			t = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[i], t, m.get(c.s))
	}
}
