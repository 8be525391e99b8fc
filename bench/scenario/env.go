package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// Service ports of the demo topology: writes go to the forked (multicast)
// port, reads to the anycast port; both map to the nodes' RESP port.
const (
	WritePort = testbed.DefaultNodePort
	ReadPort  = 6380
	NodePort  = testbed.DefaultNodePort
	// ControlAddr is the middlebox's control listener in the gateway
	// namespace.
	ControlAddr = testbed.DefaultControl
	// MarkerKey is written directly into each DC's store before a run with
	// the DC's name as its value, so a read through the anycast port tells
	// which DC served it.
	MarkerKey = "sdnkvs:demo:dc"
)

// EnvConfig describes the environment: the topology, the sdnkvs binary
// and where the stores keep their data.
type EnvConfig struct {
	// Bin is the sdnkvs executable that runs the stores and the middlebox.
	Bin string
	// Name is the testbed run id ("" for a fresh one).
	Name string
	// DCs in preference order; the first is the near DC.
	DCs []testbed.DC
	// DataDir holds the stores' data; "" means a temporary directory
	// removed on Close.
	DataDir string
	// KVSExtra are extra flags for `sdnkvs kvs cluster`.
	KVSExtra []string
	// Log receives setup messages (nil: discarded).
	Log io.Writer
	// NoMarker skips writing MarkerKey into each DC (sequenced nodes
	// refuse writes that do not come through the middlebox).
	NoMarker bool
}

// Env is a running environment: the namespace testbed, one kvs cluster per
// DC and (optionally) the middlebox. Its methods are safe for concurrent
// use; Close tears everything down and is idempotent.
type Env struct {
	cfg     EnvConfig
	TB      *testbed.Testbed
	dataDir string
	ownData bool

	mu       sync.Mutex
	mb       *testbed.Process
	clusters map[string]*testbed.Process
	closed   bool
}

// NewEnv builds the testbed and starts one kvs cluster per DC (in
// parallel), writes the DC marker into each, and returns once every store
// is ready. On error everything is torn down.
func NewEnv(ctx context.Context, cfg EnvConfig) (*Env, error) {
	if cfg.Bin == "" {
		return nil, errors.New("demo: no sdnkvs binary given")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	e := &Env{cfg: cfg, clusters: map[string]*testbed.Process{}}
	if cfg.DataDir == "" {
		d, err := os.MkdirTemp("", "sdnkvs-demo-")
		if err != nil {
			return nil, err
		}
		e.dataDir, e.ownData = d, true
	} else {
		e.dataDir = cfg.DataDir
	}
	tb, err := testbed.Up(testbed.Config{Name: cfg.Name, DCs: cfg.DCs})
	if err != nil {
		e.Close()
		return nil, err
	}
	e.TB = tb
	fmt.Fprintf(cfg.Log, "testbed %s up: %d DCs\n", tb.Name(), len(cfg.DCs))
	errc := make(chan error, len(cfg.DCs))
	for _, d := range cfg.DCs {
		go func() { errc <- e.StartCluster(ctx, d.Name) }()
	}
	for range cfg.DCs {
		if err2 := <-errc; err2 != nil && err == nil {
			err = err2
		}
	}
	if err != nil {
		e.Close()
		return nil, err
	}
	for _, d := range cfg.DCs {
		if cfg.NoMarker {
			break
		}
		if err := e.writeMarker(ctx, d.Name); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// Config returns the environment's configuration.
func (e *Env) Config() EnvConfig { return e.cfg }

// Near is the most preferred DC's name.
func (e *Env) Near() string { return e.cfg.DCs[0].Name }

// Far is the least preferred DC's name.
func (e *Env) Far() string { return e.cfg.DCs[len(e.cfg.DCs)-1].Name }

// StartCluster starts DC dc's kvs cluster (its data persists across
// restarts) and waits until it reports ready.
func (e *Env) StartCluster(ctx context.Context, dc string) error {
	e.mu.Lock()
	if e.clusters[dc] != nil {
		e.mu.Unlock()
		return fmt.Errorf("demo: cluster %s already running", dc)
	}
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	p, err := e.TB.StartKVSCluster(ctx, e.cfg.Bin, dc, filepath.Join(e.dataDir, dc), e.cfg.KVSExtra...)
	if err != nil {
		return fmt.Errorf("demo: start %s cluster: %w", dc, err)
	}
	e.mu.Lock()
	e.clusters[dc] = p
	e.mu.Unlock()
	fmt.Fprintf(e.cfg.Log, "%s: %d kvs nodes ready\n", dc, len(e.TB.NodeAddrs(dc)))
	return nil
}

// StopCluster stops DC dc's kvs cluster (a DC that lost its servers).
func (e *Env) StopCluster(dc string) {
	e.mu.Lock()
	p := e.clusters[dc]
	delete(e.clusters, dc)
	e.mu.Unlock()
	if p != nil {
		p.Stop(5 * time.Second)
	}
}

// writeMarker stores MarkerKey = dc directly in DC dc's store.
func (e *Env) writeMarker(ctx context.Context, dc string) error {
	c, err := e.DialDC(ctx, dc, 0)
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := c.Do(ctx, []byte("SET"), []byte(MarkerKey), []byte(dc))
	if err != nil {
		return fmt.Errorf("demo: write marker in %s: %w", dc, err)
	}
	if !rep.IsOK() {
		return fmt.Errorf("demo: write marker in %s: reply %c%s", dc, rep.Kind, rep.Str)
	}
	return nil
}

// MB selects how the middlebox runs.
type MB struct {
	// Detector is the --detector value ("": the flag is not passed).
	Detector string
	// Extra flags, appended.
	Extra []string
	// AnycastOnly leaves out the forked port (experiments that only read).
	AnycastOnly bool
}

// MiddleboxOptions returns the testbed options for the demo middlebox:
// forked port WritePort, anycast port ReadPort, the detector (if not
// empty) and extra flags.
func (e *Env) MiddleboxOptions(mb MB) testbed.MiddleboxOptions {
	var ex []string
	if mb.Detector != "" {
		ex = append(ex, "--detector", mb.Detector)
	}
	ex = append(ex, mb.Extra...)
	o := testbed.MiddleboxOptions{
		Bin:       e.cfg.Bin,
		Multicast: []uint16{WritePort},
		Anycast:   []uint16{ReadPort},
		NodePort:  NodePort,
		Control:   ControlAddr,
		Extra:     ex,
	}
	if mb.AnycastOnly {
		o.Multicast = nil
	}
	return o
}

// StartMiddlebox starts the middlebox in the gateway namespace and waits
// until its control API answers.
func (e *Env) StartMiddlebox(ctx context.Context, mb MB) error {
	e.mu.Lock()
	if e.mb != nil {
		e.mu.Unlock()
		return errors.New("demo: middlebox already running")
	}
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, err := e.TB.StartMiddlebox(ctx, e.MiddleboxOptions(mb))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	e.mu.Lock()
	e.mb = p
	e.mu.Unlock()
	fmt.Fprintf(e.cfg.Log, "middlebox up (detector %q)\n", mb.Detector)
	return nil
}

// StopMiddlebox stops the middlebox (it removes its routes on exit).
func (e *Env) StopMiddlebox() {
	e.mu.Lock()
	p := e.mb
	e.mb = nil
	e.mu.Unlock()
	if p != nil {
		p.Stop(5 * time.Second)
	}
}

// MiddleboxOutput returns the running (or last) middlebox's output, for
// error messages.
func (e *Env) MiddleboxOutput() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mb == nil {
		return ""
	}
	return e.mb.Output()
}

// Close stops every process and tears the testbed down.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	var err error
	if e.TB != nil {
		err = e.TB.Close()
	}
	if e.ownData {
		os.RemoveAll(e.dataDir)
	}
	return err
}

// DialClient opens a TCP connection from the client namespace to the VIP
// on port.
func (e *Env) DialClient(ctx context.Context, port uint16) (net.Conn, error) {
	return testbed.DialInNetns(ctx, e.TB.NS("client"), "tcp", netip.AddrPortFrom(testbed.VIP, port).String())
}

// DialClientTo opens a TCP connection from the client namespace to addr
// (bypassing the middlebox when addr is a node).
func (e *Env) DialClientTo(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	return testbed.DialInNetns(ctx, e.TB.NS("client"), "tcp", addr.String())
}

// DialDC opens a RESP client from inside DC dc's namespace to its node i
// (modulo the node count), bypassing the middlebox and the WAN link.
func (e *Env) DialDC(ctx context.Context, dc string, i int) (*resp.Client, error) {
	nodes := e.TB.NodeAddrs(dc)
	if len(nodes) == 0 {
		return nil, fmt.Errorf("demo: unknown DC %q", dc)
	}
	addr := netip.AddrPortFrom(nodes[i%len(nodes)], NodePort)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := testbed.DialInNetns(dctx, e.TB.NS(dc), "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("demo: dial %s in %s: %w", addr, dc, err)
	}
	return resp.NewClient(c), nil
}

// DCState is one DC as the middlebox's /dcs reports it. Fields the
// middlebox adds later are ignored.
type DCState struct {
	Name  string `json:"name"`
	Live  bool   `json:"live"`
	Nodes []struct {
		Addr  string `json:"addr"`
		Live  bool   `json:"live"`
		Cause string `json:"cause"`
	} `json:"nodes"`
	Transitions []Transition `json:"transitions"`
}

// Transition is one failover decision the middlebox reports in /dcs.
type Transition struct {
	DC     string    `json:"-"` // filled in by Transitions
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	Node   string    `json:"node"`
	Signal string    `json:"signal"`
	Cause  string    `json:"cause"`
}

// Transitions returns every DC's recent transitions from /dcs, oldest
// first within each DC.
func (e *Env) Transitions() ([]Transition, error) {
	dcs, err := e.DCs()
	if err != nil {
		return nil, err
	}
	var out []Transition
	for _, d := range dcs {
		for _, t := range d.Transitions {
			t.DC = d.Name
			out = append(out, t)
		}
	}
	slices.SortStableFunc(out, func(a, b Transition) int { return a.At.Compare(b.At) })
	return out, nil
}

// CheckSettled watches /dcs for d and fails if any DC is not live at some
// point: the demo must not start on a system that already lost a DC (for
// example a detector that cannot reach the far DC in time).
func (e *Env) CheckSettled(ctx context.Context, d time.Duration) error {
	until := time.Now().Add(d)
	for {
		dcs, err := e.DCs()
		if err != nil {
			return err
		}
		for _, dc := range dcs {
			if !dc.Live {
				cause := ""
				for _, n := range dc.Nodes {
					if n.Cause != "" {
						cause = n.Cause
					}
				}
				return fmt.Errorf("demo: before any cut the middlebox reports DC %s down (%s); the failure detector misjudges this topology", dc.Name, cause)
			}
		}
		if time.Now().After(until) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DCs fetches the middlebox's /dcs.
func (e *Env) DCs() ([]DCState, error) {
	raw, err := e.Control("/dcs")
	if err != nil {
		return nil, err
	}
	var out []DCState
	if err := json.Unmarshal(raw, &out); err != nil {
		// Tolerate an object wrapping the list ({"dcs": [...]}).
		var wrap struct {
			DCs []DCState `json:"dcs"`
		}
		if err2 := json.Unmarshal(raw, &wrap); err2 != nil || wrap.DCs == nil {
			return nil, fmt.Errorf("demo: /dcs: %w", err)
		}
		out = wrap.DCs
	}
	return out, nil
}

// DCLive reports whether the middlebox considers DC dc live.
func (e *Env) DCLive(dc string) (bool, error) {
	dcs, err := e.DCs()
	if err != nil {
		return false, err
	}
	for _, d := range dcs {
		if d.Name == dc {
			return d.Live, nil
		}
	}
	return false, fmt.Errorf("demo: /dcs has no DC %q", dc)
}

// WaitDCLive polls /dcs until DC dc's liveness is live, or ctx ends.
func (e *Env) WaitDCLive(ctx context.Context, dc string, live bool) error {
	var last error
	for {
		got, err := e.DCLive(dc)
		if err == nil && got == live {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: waiting for DC %s live=%v: %w (last error: %v)", dc, live, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Control GETs path from the middlebox's control API.
func (e *Env) Control(path string) ([]byte, error) {
	c := testbed.HTTPClient(e.TB.NS("gw"), 2*time.Second)
	resp, err := c.Get("http://" + ControlAddr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("demo: GET %s: %s: %s", path, resp.Status, b)
	}
	return b, nil
}

// Metric returns the sum of the Prometheus samples named name (any
// labels) in the middlebox's /metrics, and whether any was found.
func (e *Env) Metric(name string) (float64, bool, error) {
	raw, err := e.Control("/metrics")
	if err != nil {
		return 0, false, err
	}
	return sumMetric(raw, name)
}

// sumMetric sums the samples of metric name in Prometheus text format.
func sumMetric(raw []byte, name string) (float64, bool, error) {
	var sum float64
	found := false
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		if len(line) == 0 || line[0] == '#' || len(line) < len(name) || string(line[:len(name)]) != name {
			continue
		}
		rest := line[len(name):]
		if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		j := bytes.LastIndexByte(rest, ' ')
		if j < 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(rest[j+1:]), 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric %s: %q: %w", name, line, err)
		}
		sum += v
		found = true
	}
	return sum, found, nil
}
