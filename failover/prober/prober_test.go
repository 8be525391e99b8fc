package prober

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// collector gathers results per node.
type collector struct {
	mu  sync.Mutex
	res map[failover.NodeID][]Result
}

func newCollector() *collector { return &collector{res: map[failover.NodeID][]Result{}} }

func (c *collector) report(r Result) {
	c.mu.Lock()
	c.res[r.Node] = append(c.res[r.Node], r)
	c.mu.Unlock()
}

func (c *collector) results(n failover.NodeID) []Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Result(nil), c.res[n]...)
}

// count returns how many results of node n satisfy ok.
func (c *collector) count(n failover.NodeID, ok func(Result) bool) int {
	k := 0
	for _, r := range c.results(n) {
		if ok(r) {
			k++
		}
	}
	return k
}

func isReady(r Result) bool  { return r.OK && r.Ready && r.Err == nil && r.RTT > 0 }
func isFailed(r Result) bool { return !r.OK && !r.Ready && r.Err != nil }

// closedPort returns a loopback address on which nothing listens.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// checkNoLeak fails t if goroutines started during the test outlive it.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		testenv.WaitFor(t, 5*time.Second, "prober goroutines to end", func() bool {
			return runtime.NumGoroutine() <= before
		})
	})
}

func TestTCPProbeOpenAndClosedPort(t *testing.T) {
	checkNoLeak(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	col := newCollector()
	p, err := New(Config{Interval: 20 * time.Millisecond}, []Target{
		{Node: 0, Kind: TCP, Addr: l.Addr().String()},
		{Node: 1, Kind: TCP, Addr: closedPort(t)},
	}, col.report)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	p.Start() // idempotent
	testenv.WaitFor(t, 5*time.Second, "5 ready probes of the listener and 5 failures of the closed port", func() bool {
		return col.count(0, isReady) >= 5 && col.count(1, isFailed) >= 5
	})
	p.Close()
	if n := col.count(0, func(r Result) bool { return !isReady(r) }); n != 0 {
		t.Errorf("%d probes of a live listener failed: %+v", n, col.results(0))
	}
	if n := col.count(1, func(r Result) bool { return !isFailed(r) }); n != 0 {
		t.Errorf("%d probes of a closed port succeeded: %+v", n, col.results(1))
	}
	if accepted.Load() < 5 {
		t.Errorf("listener accepted %d connections", accepted.Load())
	}
	// Nothing is reported after Close.
	n0, n1 := len(col.results(0)), len(col.results(1))
	if len(col.results(0)) != n0 || len(col.results(1)) != n1 {
		t.Error("results reported after Close")
	}
}

func TestHTTPReadyEndpoint(t *testing.T) {
	checkNoLeak(t)
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
			return
		}
		if ready.Load() {
			w.Write([]byte("ready\n"))
			return
		}
		http.Error(w, "catching up", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	col := newCollector()
	p, err := New(Config{Interval: 20 * time.Millisecond}, []Target{{Node: 3, Kind: HTTP, Addr: srv.URL + "/ready"}}, col.report)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Start()
	notReady := func(r Result) bool {
		return r.OK && !r.Ready && r.Err != nil && strings.Contains(r.Err.Error(), "503")
	}
	testenv.WaitFor(t, 5*time.Second, "3 not-ready (503) probes", func() bool { return col.count(3, notReady) >= 3 })
	ready.Store(true)
	testenv.WaitFor(t, 5*time.Second, "3 ready (200) probes", func() bool { return col.count(3, isReady) >= 3 })
	ready.Store(false)
	before := col.count(3, notReady)
	testenv.WaitFor(t, 5*time.Second, "not ready again", func() bool { return col.count(3, notReady) >= before+2 })
	for _, r := range col.results(3) {
		if !r.OK {
			t.Errorf("a probe of a reachable server failed: %+v", r)
		}
	}
}

// TestStalledServerTimesOutAndProbesOverlap: a node that accepts but never
// answers yields a failure per Interval (probes overlap), each after the
// timeout.
func TestStalledServerTimesOutAndProbesOverlap(t *testing.T) {
	checkNoLeak(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	col := newCollector()
	cfg := Config{Interval: 20 * time.Millisecond, MinTimeout: 100 * time.Millisecond, MaxTimeout: 100 * time.Millisecond}
	p, err := New(cfg, []Target{{Node: 1, Kind: HTTP, Addr: srv.URL + "/ready"}}, col.report)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	p.Start()
	testenv.WaitFor(t, 5*time.Second, "10 timed-out probes", func() bool { return col.count(1, isFailed) >= 10 })
	rs := col.results(1)
	if first := rs[0].At.Sub(start); first < cfg.MinTimeout {
		t.Errorf("first failure after %v, before the %v timeout", first, cfg.MinTimeout)
	}
	// Ten failures of 100 ms probes started 20 ms apart: overlapping, so
	// the tenth arrives long before 10 timeouts have passed in sequence.
	if span := rs[9].At.Sub(rs[0].At); span >= 9*cfg.MinTimeout {
		t.Errorf("10 failures spread over %v: probes did not overlap", span)
	}
}

func TestTimeoutAdaptsToRTT(t *testing.T) {
	p, err := New(Config{MinTimeout: 250 * time.Millisecond, MaxTimeout: time.Second}, []Target{{Kind: TCP, Addr: "127.0.0.1:1"}}, func(Result) {})
	if err != nil {
		t.Fatal(err)
	}
	tg := p.targets[0]
	if got := p.Timeout(0); got != time.Second {
		t.Errorf("timeout without RTT %v, want MaxTimeout (1s): a far node must get a chance to answer", got)
	}
	tg.srtt, tg.haveRTT = 10*time.Millisecond, true
	if got := p.Timeout(0); got != 270*time.Millisecond {
		t.Errorf("timeout at 10 ms RTT %v, want 270ms", got)
	}
	tg.srtt = 340 * time.Millisecond
	if got := p.Timeout(0); got != 930*time.Millisecond {
		t.Errorf("timeout at 340 ms RTT %v, want 930ms", got)
	}
	tg.srtt = 2 * time.Second
	if got := p.Timeout(0); got != time.Second {
		t.Errorf("timeout not capped: %v", got)
	}
	p.Close()
}

func TestConfigAndTargetValidation(t *testing.T) {
	bad := []struct {
		cfg     Config
		targets []Target
		want    string
	}{
		{Config{Interval: -1}, nil, "Config.Interval"},
		{Config{MinTimeout: -1}, nil, "Config.MinTimeout"},
		{Config{MaxTimeout: -1}, nil, "Config.MaxTimeout"},
		{Config{MaxInFlight: -1}, nil, "Config.MaxInFlight"},
		{Config{MinTimeout: time.Second, MaxTimeout: time.Millisecond}, nil, "Config.MaxTimeout"},
		{Config{}, []Target{{Kind: TCP, Addr: "nohostport"}}, "TCP address"},
		{Config{}, []Target{{Kind: HTTP, Addr: "ftp://x/ready"}}, "http:// URL"},
		{Config{}, []Target{{Kind: 9, Addr: "x:1"}}, "unknown kind"},
	}
	for _, tc := range bad {
		_, err := New(tc.cfg, tc.targets, func(Result) {})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v, %+v) = %v, want an error mentioning %q", tc.cfg, tc.targets, err, tc.want)
		}
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Error("nil report accepted")
	}
	if got := ReadyURL("10.0.1.1", ReadyPort); got != "http://10.0.1.1:8379/ready" {
		t.Errorf("ReadyURL = %q", got)
	}
}

// TestProberDrivesDetector: the prober and the detector together on
// loopback: a node whose /ready stops answering is declared down; when it
// is ready again it is readmitted after ReadmitAfter.
func TestProberDrivesDetector(t *testing.T) {
	checkNoLeak(t)
	var up atomic.Bool
	up.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	topo := []failover.DC{
		{Name: "near", Nodes: []netip.AddrPort{netip.MustParseAddrPort("10.0.1.1:6379")}},
		{Name: "far", Nodes: []netip.AddrPort{netip.MustParseAddrPort("10.0.2.1:6379")}},
	}
	d, err := failover.New[int](failover.Config{ReadmitAfter: 200 * time.Millisecond}, topo)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // the detector is single-goroutine: serialize
	var log []failover.Decision
	p, err := New(Config{Interval: 20 * time.Millisecond}, []Target{{Node: 0, Kind: HTTP, Addr: srv.URL + "/ready"}},
		func(r Result) {
			mu.Lock()
			log = append(log, d.Probe(r.At, r.Node, r.ProbeResult)...)
			mu.Unlock()
		})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Start()
	preferred := func() failover.DCID {
		mu.Lock()
		defer mu.Unlock()
		dc, _ := d.PreferredDC()
		return dc
	}
	testenv.WaitFor(t, 2*time.Second, "probes to flow", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return d.Stats().Probes >= 3
	})
	if preferred() != 0 {
		t.Fatal("near DC not preferred while ready")
	}
	up.Store(false)
	testenv.WaitFor(t, 5*time.Second, "the near DC to go down", func() bool { return preferred() == 1 })
	up.Store(true)
	testenv.WaitFor(t, 5*time.Second, "the near DC to be readmitted", func() bool { return preferred() == 0 })
	mu.Lock()
	defer mu.Unlock()
	var kinds []string
	for _, dec := range log {
		kinds = append(kinds, dec.Kind.String())
	}
	if got := strings.Join(kinds, " "); got != "NodeDown DCDown NodeUp DCUp" {
		t.Errorf("decisions %q", got)
	}
}
