// Package prober runs active health probes of kvs nodes for the failover
// detector: a TCP connect to a node's service address, or an HTTP GET of
// its readiness endpoint (ReadyURL, on ReadyPort: 200 ready, 503 not ready).
//
//	ticker (per target, every Interval) ──► probe goroutine (timeout) ──► report(Result) ──► middlebox ──► Detector.Probe
//
// Probes of one target overlap: a new probe starts every Interval even
// while earlier ones wait for their timeout, so a dead node yields one
// failure per Interval, not one per timeout. The timeout adapts to the
// target's RTT: MinTimeout + 2*srtt, at most MaxTimeout, so a probe
// survives one lost segment (recovered after one 200 ms RTO) on a near
// node and still fits a far node's RTT.
//
// HTTP probes reuse a keep-alive connection per target when they can, so
// a probe is one request and one reply; after a failure the target's idle
// connections are closed and the next probe dials afresh.
package prober

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
)

// Kind is how a target is probed. Its text form ("none", "tcp", "ready")
// is what the middlebox's --probe flag takes.
type Kind uint8

const (
	// None: no probing. A configuration uses it to turn probes off; a
	// Target of kind None is rejected by New.
	None Kind = iota
	// TCP: connect to Addr (host:port) and close; a connection is ready.
	TCP
	// HTTP: GET Addr (a URL, normally a node's ReadyURL); 200 is ready,
	// any other status is reachable but not ready.
	HTTP
)

var kindNames = [...]string{None: "none", TCP: "tcp", HTTP: "ready"}

// String returns "none", "tcp" or "ready" (HTTP readiness probes).
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// MarshalText returns the kind's name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses "none", "tcp" or "ready" (also "http").
func (k *Kind) UnmarshalText(b []byte) error {
	switch string(b) {
	case "none":
		*k = None
	case "tcp":
		*k = TCP
	case "ready", "http":
		*k = HTTP
	default:
		return fmt.Errorf("unknown probe kind %q (want ready, tcp or none)", b)
	}
	return nil
}

// ReadyPort is the port of a kvs node's readiness endpoint (/ready), and
// so the default port of HTTP probes.
const ReadyPort = 8379

// Target is one node to probe.
type Target struct {
	Node failover.NodeID
	Kind Kind
	// Addr is host:port for TCP, a full http:// URL for HTTP.
	Addr string
}

// ReadyURL returns the readiness URL of a node at ip whose readiness
// endpoint listens on port: http://ip:port/ready.
func ReadyURL(ip string, port uint16) string {
	return "http://" + net.JoinHostPort(ip, strconv.Itoa(int(port))) + "/ready"
}

// Result is the outcome of one probe.
type Result struct {
	Node failover.NodeID
	// At is when the probe completed (or timed out).
	At time.Time
	failover.ProbeResult
	// Err says why a probe failed or why the node is not ready.
	Err error
}

// Config tunes the prober; zero fields take defaults.
type Config struct {
	// Interval between probe starts per target. Default 100 ms.
	Interval time.Duration
	// MinTimeout is the floor of the adaptive timeout. Default 250 ms.
	// A target with no RTT sample yet is probed with MaxTimeout, so a far
	// node (a 340 ms RTT, an HTTP probe needing two round trips on a new
	// connection) is never declared down before it could have answered.
	MinTimeout time.Duration
	// MaxTimeout caps the adaptive timeout. Default 2 s.
	MaxTimeout time.Duration
	// MaxInFlight bounds concurrent probes per target; a probe that would
	// exceed it is reported failed at once. Default MaxTimeout/Interval+2.
	MaxInFlight int
	// DialContext dials probe connections (for example from a given
	// source address or network namespace). Default net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.MinTimeout == 0 {
		c.MinTimeout = 250 * time.Millisecond
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = max(2*time.Second, c.MinTimeout)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = int(c.MaxTimeout/c.Interval) + 2
	}
	if c.DialContext == nil {
		c.DialContext = (&net.Dialer{}).DialContext
	}
	return c
}

// Validate reports the first bad field by name.
func (c Config) Validate() error {
	switch {
	case c.Interval < 0:
		return fmt.Errorf("prober: Config.Interval %v is negative", c.Interval)
	case c.MinTimeout < 0:
		return fmt.Errorf("prober: Config.MinTimeout %v is negative", c.MinTimeout)
	case c.MaxTimeout < 0:
		return fmt.Errorf("prober: Config.MaxTimeout %v is negative", c.MaxTimeout)
	case c.MaxInFlight < 0:
		return fmt.Errorf("prober: Config.MaxInFlight %d is negative", c.MaxInFlight)
	}
	if f := c.withDefaults(); f.MaxTimeout < f.MinTimeout {
		return fmt.Errorf("prober: Config.MaxTimeout %v is below MinTimeout %v", f.MaxTimeout, f.MinTimeout)
	}
	return nil
}

// Prober probes a fixed set of targets until closed. Start and Close may
// be called from any goroutine; report is called serially (never
// concurrently with itself) from the prober's goroutines and should
// return quickly (hand the result to the detector's goroutine).
type Prober struct {
	cfg     Config
	targets []*target
	report  func(Result)

	reportMu sync.Mutex
	closed   bool // under reportMu: no report after Close

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  sync.Once
}

type target struct {
	Target
	client *http.Client // HTTP only

	mu       sync.Mutex
	srtt     time.Duration
	haveRTT  bool
	inFlight int
}

// New returns a prober of targets that hands every result to report.
func New(cfg Config, targets []Target, report func(Result)) (*Prober, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if report == nil {
		return nil, errors.New("prober: report is nil")
	}
	cfg = cfg.withDefaults()
	p := &Prober{cfg: cfg, report: report}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for i, t := range targets {
		tg := &target{Target: t}
		switch t.Kind {
		case TCP:
			if _, _, err := net.SplitHostPort(t.Addr); err != nil {
				return nil, fmt.Errorf("prober: target %d (node %d): TCP address %q: %v", i, t.Node, t.Addr, err)
			}
		case HTTP:
			u, err := url.Parse(t.Addr)
			if err != nil || u.Scheme != "http" || u.Host == "" {
				return nil, fmt.Errorf("prober: target %d (node %d): HTTP probe wants an http:// URL, got %q", i, t.Node, t.Addr)
			}
			tg.client = &http.Client{
				Transport: &http.Transport{
					DialContext:         cfg.DialContext,
					MaxIdleConnsPerHost: 2,
					DisableCompression:  true,
					Proxy:               nil,
				},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
		default:
			return nil, fmt.Errorf("prober: target %d (node %d): unknown kind %d", i, t.Node, t.Kind)
		}
		p.targets = append(p.targets, tg)
	}
	return p, nil
}

// Start launches the probe loops (once; later calls do nothing). The
// targets' first probes are spread over one Interval.
func (p *Prober) Start() {
	p.start.Do(func() {
		for i, t := range p.targets {
			phase := time.Duration(0)
			if len(p.targets) > 0 {
				phase = p.cfg.Interval * time.Duration(i) / time.Duration(len(p.targets))
			}
			p.wg.Add(1)
			go p.loop(t, phase)
		}
	})
}

// Close stops probing, waits for every probe goroutine to end, and
// guarantees report is not called after it returns.
func (p *Prober) Close() error {
	p.cancel()
	p.wg.Wait()
	p.reportMu.Lock()
	p.closed = true
	p.reportMu.Unlock()
	for _, t := range p.targets {
		if t.client != nil {
			t.client.CloseIdleConnections()
		}
	}
	return nil
}

// Timeout returns the current timeout of probes of target i (in the order
// given to New): MinTimeout + 2*srtt, capped at MaxTimeout; MaxTimeout
// while no RTT sample exists.
func (p *Prober) Timeout(i int) time.Duration {
	t := p.targets[i]
	t.mu.Lock()
	defer t.mu.Unlock()
	return p.timeoutLocked(t)
}

func (p *Prober) timeoutLocked(t *target) time.Duration {
	if !t.haveRTT {
		return p.cfg.MaxTimeout
	}
	return min(p.cfg.MinTimeout+2*t.srtt, p.cfg.MaxTimeout)
}

func (p *Prober) loop(t *target, phase time.Duration) {
	defer p.wg.Done()
	timer := time.NewTimer(phase)
	defer timer.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-timer.C:
		}
		timer.Reset(p.cfg.Interval)
		t.mu.Lock()
		if t.inFlight >= p.cfg.MaxInFlight {
			t.mu.Unlock()
			p.deliver(Result{Node: t.Node, At: time.Now(), Err: fmt.Errorf("more than %d probes in flight", p.cfg.MaxInFlight)})
			continue
		}
		t.inFlight++
		timeout := p.timeoutLocked(t)
		t.mu.Unlock()
		p.wg.Add(1)
		go p.probe(t, timeout)
	}
}

func (p *Prober) probe(t *target, timeout time.Duration) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	start := time.Now()
	var r failover.ProbeResult
	var err error
	switch t.Kind {
	case TCP:
		r, err = p.probeTCP(ctx, t)
	case HTTP:
		r, err = p.probeHTTP(ctx, t)
	}
	end := time.Now()
	t.mu.Lock()
	t.inFlight--
	if r.OK {
		r.RTT = end.Sub(start)
		if !t.haveRTT {
			t.srtt, t.haveRTT = r.RTT, true
		} else {
			t.srtt = (7*t.srtt + r.RTT) / 8
		}
	}
	t.mu.Unlock()
	if p.ctx.Err() != nil {
		return // closing: a probe cut short says nothing about the node
	}
	if err != nil && t.client != nil {
		t.client.CloseIdleConnections()
	}
	p.deliver(Result{Node: t.Node, At: end, ProbeResult: r, Err: err})
}

func (p *Prober) probeTCP(ctx context.Context, t *target) (failover.ProbeResult, error) {
	c, err := p.cfg.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return failover.ProbeResult{}, err
	}
	c.Close()
	return failover.ProbeResult{OK: true, Ready: true}, nil
}

func (p *Prober) probeHTTP(ctx context.Context, t *target) (failover.ProbeResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.Addr, nil)
	if err != nil {
		return failover.ProbeResult{}, err
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return failover.ProbeResult{}, err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil {
		return failover.ProbeResult{}, err // the reply did not arrive whole in time
	}
	if resp.StatusCode != http.StatusOK {
		return failover.ProbeResult{OK: true}, fmt.Errorf("not ready: %s", resp.Status)
	}
	return failover.ProbeResult{OK: true, Ready: true}, nil
}

func (p *Prober) deliver(r Result) {
	p.reportMu.Lock()
	defer p.reportMu.Unlock()
	if p.closed {
		return
	}
	p.report(r)
}
