//go:build linux

// Package kvsbench measures the sdnkvs store against redis-server (the speed
// ceiling, no replication) and a 3-member etcd cluster (what users pick for
// linearizable storage), all on this machine in the same run.
//
//	sdnkvs: Nodes node processes (quorum Quorum) on 127.0.0.1, driven by
//	        redis-benchmark against node 1 (-c Clients, -P 1 and -P Pipeline)
//	redis:  one redis-server (no persistence), the same redis-benchmark runs
//	etcd:   3 members, driven by a Go load generator with Clients workers
//	        over etcd's gRPC-gateway JSON API (/v3/kv/put, /v3/kv/range,
//	        linearizable reads), one request at a time per worker
//
// Each node's peak RSS is read from /proc/PID/status (VmHWM).
package kvsbench

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// Config configures a run.
type Config struct {
	Bin       string // sdnkvs executable (default: this executable)
	Nodes     int    // default 9
	Quorum    int    // default 5
	Clients   int    // default 50
	Requests  int    // per redis-benchmark test, default 100000
	EtcdReqs  int    // per etcd test, default 20000
	Pipeline  int    // default 16
	Keyspace  int    // default 100000
	ValueSize int    // default 16
	Sync      bool   // sdnkvs --sync
	EtcdBin   string // default /usr/bin/etcd; "" or missing skips etcd
	Out       string // directory for CSV and PNG
	Log       io.Writer
}

// Result is one measured row.
type Result struct {
	System   string
	Test     string // SET or GET
	Pipeline int    // 0: not applicable (etcd)
	OpsPerS  float64
	P50ms    float64
	P99ms    float64
	Driver   string
}

// RSS is one process's memory.
type RSS struct {
	Name    string
	PeakMiB float64
	NowMiB  float64
}

// Report is a run's outcome.
type Report struct {
	Results []Result
	RSS     []RSS
}

// withDefaults fills in zero fields and validates c.
func (c Config) withDefaults() (Config, error) {
	if c.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("kvsbench: no sdnkvs binary: %w", err)
		}
		c.Bin = exe
	}
	if c.Nodes == 0 {
		c.Nodes = 9
	}
	if c.Quorum == 0 {
		c.Quorum = c.Nodes/2 + 1
	}
	if c.Clients == 0 {
		c.Clients = 50
	}
	if c.Requests == 0 {
		c.Requests = 100000
	}
	if c.EtcdReqs == 0 {
		c.EtcdReqs = 20000
	}
	if c.Pipeline == 0 {
		c.Pipeline = 16
	}
	if c.Keyspace == 0 {
		c.Keyspace = 100000
	}
	if c.ValueSize == 0 {
		c.ValueSize = 16
	}
	if c.Out == "" {
		c.Out = "bench-out"
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Nodes < 1 || c.Quorum <= c.Nodes/2 || c.Quorum > c.Nodes {
		return c, fmt.Errorf("kvsbench: %d nodes, quorum %d: want n/2 < quorum <= n", c.Nodes, c.Quorum)
	}
	if c.Clients < 1 || c.Requests < 1 || c.EtcdReqs < 1 || c.Pipeline < 1 || c.Keyspace < 1 || c.ValueSize < 1 {
		return c, errors.New("kvsbench: clients, requests, pipeline, keyspace and value size must be positive")
	}
	return c, nil
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var ps []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ps = append(ps, l.Addr().(*net.TCPAddr).Port)
	}
	return ps, nil
}

// start starts a process on this machine (no namespace).
func start(bin string, args ...string) (*testbed.Process, error) {
	return testbed.StartProcess("", append([]string{bin}, args...))
}

// stop ends p by PID: SIGTERM, then SIGKILL after 10 s.
func stop(p *testbed.Process) { p.Stop(10 * time.Second) }

// readRSS reads the peak and current RSS of p from /proc.
func readRSS(name string, p *testbed.Process) RSS {
	r := RSS{Name: name}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID()))
	if err != nil {
		return r
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmHWM:":
			r.PeakMiB = kb / 1024
		case "VmRSS:":
			r.NowMiB = kb / 1024
		}
	}
	return r
}

// waitHTTP waits up to timeout for url to answer 200 while p runs.
func waitHTTP(ctx context.Context, url string, p *testbed.Process, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return testbed.WaitHTTP(ctx, &http.Client{Timeout: 2 * time.Second}, url, p)
}

// Run runs the whole comparison and writes results.csv, rss.csv and
// kvs.png to cfg.Out.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		return nil, errors.New("redis-benchmark not found (apt-get install redis-tools)")
	}
	tmp, err := os.MkdirTemp("", "kvsbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// The nodes authenticate each other with a random secret of this run.
	secret := filepath.Join(tmp, "peer-secret")
	if err := os.WriteFile(secret, []byte(crand.Text()), 0o600); err != nil {
		return nil, err
	}
	rep := &Report{}

	// 1. sdnkvs
	fmt.Fprintf(cfg.Log, "starting %d sdnkvs nodes (quorum %d)\n", cfg.Nodes, cfg.Quorum)
	ports, err := freePorts(3 * cfg.Nodes)
	if err != nil {
		return nil, err
	}
	var peers []string
	for i := 0; i < cfg.Nodes; i++ {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", ports[cfg.Nodes+i]))
	}
	var nodes []*testbed.Process
	stopAll := func() {
		for _, p := range nodes {
			stop(p)
		}
		nodes = nil
	}
	defer stopAll()
	for i := 0; i < cfg.Nodes; i++ {
		args := []string{"kvs", "--id", strconv.Itoa(i + 1),
			"--listen", fmt.Sprintf("127.0.0.1:%d", ports[i]), "--peer-listen", peers[i],
			"--http", fmt.Sprintf("127.0.0.1:%d", ports[2*cfg.Nodes+i]),
			"--peers", strings.Join(peers, ","), "--data", filepath.Join(tmp, fmt.Sprintf("node%d", i+1)),
			"--quorum", strconv.Itoa(cfg.Quorum), "--peer-secret-file", secret}
		if cfg.Sync {
			args = append(args, "--sync")
		}
		p, err := start(cfg.Bin, args...)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, p)
	}
	for i := 0; i < cfg.Nodes; i++ {
		if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/ready", ports[2*cfg.Nodes+i]), nodes[i], 30*time.Second); err != nil {
			return nil, err
		}
	}
	name := fmt.Sprintf("sdnkvs %d nodes q%d", cfg.Nodes, cfg.Quorum)
	if cfg.Sync {
		name += " sync"
	}
	rs, err := redisBench(ctx, cfg, name, ports[0])
	if err != nil {
		return nil, err
	}
	rep.Results = append(rep.Results, rs...)
	for i, p := range nodes {
		rep.RSS = append(rep.RSS, readRSS(fmt.Sprintf("sdnkvs-node%d", i+1), p))
	}
	stopAll()

	// 2. redis-server
	if rbin, err := exec.LookPath("redis-server"); err == nil {
		fmt.Fprintln(cfg.Log, "starting redis-server")
		rp, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		p, err := start(rbin, "--port", strconv.Itoa(rp[0]), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", tmp)
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = p.WaitOutput(wctx, "Ready to accept connections")
		cancel()
		if err == nil {
			rs, err := redisBench(ctx, cfg, "redis-server (1 node, no persistence)", rp[0])
			if err == nil {
				rep.Results = append(rep.Results, rs...)
			}
			rep.RSS = append(rep.RSS, readRSS("redis-server", p))
		} else {
			fmt.Fprintf(cfg.Log, "redis-server: %v\n", err)
		}
		stop(p)
	}

	// 3. etcd
	if cfg.EtcdBin != "" {
		if _, err := os.Stat(cfg.EtcdBin); err == nil {
			rs, rss, err := etcdBench(ctx, cfg, tmp)
			if err != nil {
				fmt.Fprintf(cfg.Log, "etcd: %v\n", err)
			}
			rep.Results = append(rep.Results, rs...)
			rep.RSS = append(rep.RSS, rss...)
		}
	}
	return rep, writeOutputs(cfg.Out, rep)
}

// redisBench runs redis-benchmark SET and GET, unpipelined and pipelined.
func redisBench(ctx context.Context, cfg Config, system string, port int) ([]Result, error) {
	var out []Result
	for _, pipe := range []int{1, cfg.Pipeline} {
		n := cfg.Requests
		if pipe > 1 {
			n *= 2
		}
		args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-c", strconv.Itoa(cfg.Clients),
			"-n", strconv.Itoa(n), "-P", strconv.Itoa(pipe), "-r", strconv.Itoa(cfg.Keyspace),
			"-d", strconv.Itoa(cfg.ValueSize), "-t", "set,get", "--csv"}
		fmt.Fprintf(cfg.Log, "%s: redis-benchmark %s\n", system, strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "redis-benchmark", args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("redis-benchmark: %v: %s", err, stderr.String())
		}
		recs, err := csv.NewReader(&stdout).ReadAll()
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark csv: %v", err)
		}
		for _, r := range recs {
			if len(r) < 7 || (r[0] != "SET" && r[0] != "GET") {
				continue
			}
			rps, _ := strconv.ParseFloat(r[1], 64)
			p50, _ := strconv.ParseFloat(r[4], 64)
			p99, _ := strconv.ParseFloat(r[6], 64)
			out = append(out, Result{System: system, Test: r[0], Pipeline: pipe, OpsPerS: rps, P50ms: p50, P99ms: p99,
				Driver: fmt.Sprintf("redis-benchmark -c %d -P %d", cfg.Clients, pipe)})
		}
	}
	return out, nil
}

func etcdBench(ctx context.Context, cfg Config, tmp string) ([]Result, []RSS, error) {
	fmt.Fprintln(cfg.Log, "starting 3 etcd members")
	ports, err := freePorts(6)
	if err != nil {
		return nil, nil, err
	}
	var initial []string
	for i := 0; i < 3; i++ {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i, ports[3+i]))
	}
	var procs []*testbed.Process
	defer func() {
		for _, p := range procs {
			stop(p)
		}
	}()
	var urls []string
	for i := 0; i < 3; i++ {
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[3+i])
		p, err := start(cfg.EtcdBin, "--name", fmt.Sprintf("e%d", i),
			"--data-dir", filepath.Join(tmp, fmt.Sprintf("etcd%d", i)),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "kvsbench", "--log-level", "error")
		if err != nil {
			return nil, nil, err
		}
		procs = append(procs, p)
		urls = append(urls, client)
	}
	for i, u := range urls {
		if err := waitHTTP(ctx, u+"/health", procs[i], 30*time.Second); err != nil {
			return nil, nil, err
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.Clients, MaxConnsPerHost: cfg.Clients}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var out []Result
	val := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("x"), cfg.ValueSize))
	for _, test := range []string{"SET", "GET"} {
		r, err := etcdLoad(ctx, cfg, hc, urls, test, val)
		if err != nil {
			return out, nil, err
		}
		out = append(out, r)
	}
	var rss []RSS
	for i, p := range procs {
		rss = append(rss, readRSS(fmt.Sprintf("etcd-%d", i), p))
	}
	return out, rss, nil
}

// etcdLoad runs cfg.EtcdReqs requests from cfg.Clients workers, worker w
// talking to member w%3.
func etcdLoad(ctx context.Context, cfg Config, hc *http.Client, urls []string, test, val string) (Result, error) {
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs int
		next int
		wg   sync.WaitGroup
	)
	key := func(r *rand.Rand) string {
		return base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("key:%012d", r.IntN(cfg.Keyspace))))
	}
	t0 := time.Now()
	for w := 0; w < cfg.Clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 3))
			var my []time.Duration
			for {
				mu.Lock()
				if next >= cfg.EtcdReqs || ctx.Err() != nil {
					mu.Unlock()
					break
				}
				next++
				mu.Unlock()
				var body []byte
				path := "/v3/kv/put"
				if test == "SET" {
					body, _ = json.Marshal(map[string]string{"key": key(r), "value": val})
				} else {
					path = "/v3/kv/range"
					body, _ = json.Marshal(map[string]string{"key": key(r)})
				}
				s := time.Now()
				resp, err := hc.Post(urls[w%len(urls)]+path, "application/json", bytes.NewReader(body))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					continue
				}
				my = append(my, time.Since(s))
			}
			mu.Lock()
			lats = append(lats, my...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	el := time.Since(t0)
	if len(lats) == 0 {
		return Result{}, fmt.Errorf("etcd %s: every request failed (%d errors)", test, errs)
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	pct := func(p float64) float64 {
		return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))]) / 1e6
	}
	fmt.Fprintf(cfg.Log, "etcd %s: %d ok, %d errors in %v\n", test, len(lats), errs, el)
	return Result{System: "etcd 3.4 (3 members)", Test: test, OpsPerS: float64(len(lats)) / el.Seconds(),
		P50ms: pct(0.50), P99ms: pct(0.99),
		Driver: fmt.Sprintf("Go HTTP/JSON gateway, %d workers", cfg.Clients)}, nil
}

// Find returns the first result matching system prefix, test and pipeline.
func (r *Report) Find(systemPrefix, test string, pipe int) (Result, bool) {
	for _, x := range r.Results {
		if strings.HasPrefix(x.System, systemPrefix) && x.Test == test && x.Pipeline == pipe {
			return x, true
		}
	}
	return Result{}, false
}
