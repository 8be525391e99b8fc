//go:build linux

package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
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
	// NoMarker skips writing MarkerKey into each DC. Sequenced nodes
	// refuse writes that do not come through the middlebox, so in a
	// sequenced environment the marker is written during a first,
	// unsequenced start of each DC's cluster (sequenced.go).
	NoMarker bool
	// Sequencing runs the nodes and the middlebox sequenced, and with
	// Lifecycle also wires the DCs to each other for catch-up
	// (sequenced.go). Zero: neither.
	Sequencing
}

// Env is a running environment: the namespace testbed, one kvs cluster per
// DC and (optionally) the middlebox. Its methods are safe for concurrent
// use; Close tears everything down and is idempotent.
type Env struct {
	cfg     EnvConfig
	TB      *testbed.Testbed
	dataDir string
	ownData bool

	secDir string // secrets and sequencer state of a sequenced environment

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
	if err := e.initSequencing(); err != nil {
		e.Close()
		return nil, err
	}
	cfg = e.cfg // Lifecycle implies Sequenced
	tb, err := testbed.Up(testbed.Config{Name: cfg.Name, DCs: cfg.DCs})
	if err != nil {
		e.Close()
		return nil, err
	}
	e.TB = tb
	fmt.Fprintf(cfg.Log, "testbed %s up: %d DCs\n", tb.Name(), len(cfg.DCs))
	errc := make(chan error, len(cfg.DCs))
	for _, d := range cfg.DCs {
		go func() {
			if cfg.Sequenced && !cfg.NoMarker {
				errc <- e.seedMarker(ctx, d.Name)
				return
			}
			errc <- e.StartCluster(ctx, d.Name)
		}()
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
		if cfg.NoMarker || cfg.Sequenced {
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
	return e.startCluster(ctx, dc, e.kvsArgs(dc))
}

// startCluster starts DC dc's cluster with flags args.
func (e *Env) startCluster(ctx context.Context, dc string, args []string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	p, err := e.TB.StartKVSCluster(ctx, e.cfg.Bin, dc, filepath.Join(e.dataDir, dc), args...)
	if err != nil {
		return fmt.Errorf("demo: start %s cluster: %w", dc, err)
	}
	e.mu.Lock()
	e.clusters[dc] = p
	e.mu.Unlock()
	fmt.Fprintf(e.cfg.Log, "%s: %d kvs nodes ready\n", dc, len(e.TB.NodeAddrs(dc)))
	return nil
}

// DataDir is DC dc's cluster data directory (node i's store is in
// node<i+1> under it).
func (e *Env) DataDir(dc string) string { return filepath.Join(e.dataDir, dc) }

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
	ex = append(ex, e.middleboxSeqArgs()...)
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
	if e.cfg.Sequenced {
		if err := e.waitOrderStreams(ctx); err != nil {
			return err
		}
	}
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

// ClusterOutput is the last output of DC dc's kvs cluster ("" when it
// has none): the nodes' logs, for a slow or odd case.
func (e *Env) ClusterOutput(dc string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.clusters[dc]; p != nil {
		return p.Output()
	}
	return ""
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
	if e.secDir != "" {
		os.RemoveAll(e.secDir)
	}
	return err
}

// DialClient opens a TCP connection from the client namespace to the VIP
// on port (authenticated when the environment has a password).
func (e *Env) DialClient(ctx context.Context, port uint16) (net.Conn, error) {
	return e.DialClientTo(ctx, netip.AddrPortFrom(testbed.VIP, port))
}

// DialClientTo opens a TCP connection from the client namespace to addr
// (bypassing the middlebox when addr is a node).
func (e *Env) DialClientTo(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	c, err := testbed.DialInNetns(ctx, e.TB.NS("client"), "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	if err := e.auth(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
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
	if err := e.auth(dctx, c); err != nil {
		c.Close()
		return nil, fmt.Errorf("demo: %s in %s: %w", addr, dc, err)
	}
	return resp.NewClient(c), nil
}
