//go:build linux

package testbed

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults of the services the testbed starts (the sdnkvs commands'
// defaults).
const (
	// DefaultNodePort is a kvs node's RESP port.
	DefaultNodePort = 6379
	// DefaultControl is the middlebox's control listener, in the gateway
	// namespace.
	DefaultControl = "127.0.0.1:9090"
)

// MiddleboxOptions configures [Testbed.StartMiddlebox]. Zero values take
// the defaults shown.
type MiddleboxOptions struct {
	Bin       string   // path to the sdnkvs binary (required)
	Tun       string   // TUN name, default "sdn0"
	TunMode   string   // --tun-mode: "offload" or "plain"; "" passes none
	Multicast []uint16 // VIP ports forked to every DC (--multicast)
	Anycast   []uint16 // VIP ports sent to one DC (--anycast)
	NodePort  uint16   // node service port in the --dc lists, default DefaultNodePort
	Control   string   // control listener in the gw namespace, default DefaultControl
	NoRoutes  bool     // do not pass --routes
	Extra     []string // more flags, appended
	// ReadyPath is polled on the control listener until it answers 200;
	// default "/dcs".
	ReadyPath string
}

func (o MiddleboxOptions) withDefaults() MiddleboxOptions {
	if o.Tun == "" {
		o.Tun = "sdn0"
	}
	if o.NodePort == 0 {
		o.NodePort = DefaultNodePort
	}
	if o.Control == "" {
		o.Control = DefaultControl
	}
	if o.ReadyPath == "" {
		o.ReadyPath = "/dcs"
	}
	return o
}

func joinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// MiddleboxArgs returns the middlebox command line for this topology:
//
//	sdnkvs middlebox --tun sdn0 --vip 10.200.100.1 --multicast 6379
//	  --anycast 6380 --dc sydney=10.210.1.11:6379,... --dc dublin=...
//	  --control 127.0.0.1:9090 --routes [--tun-mode M] [extra...]
func (tb *Testbed) MiddleboxArgs(o MiddleboxOptions) []string {
	o = o.withDefaults()
	args := []string{o.Bin, "middlebox", "--tun", o.Tun, "--vip", VIP.String()}
	if len(o.Multicast) > 0 {
		args = append(args, "--multicast", joinPorts(o.Multicast))
	}
	if len(o.Anycast) > 0 {
		args = append(args, "--anycast", joinPorts(o.Anycast))
	}
	for _, d := range tb.cfg.DCs {
		var nodes []string
		for _, a := range tb.NodeAddrs(d.Name) {
			nodes = append(nodes, fmt.Sprintf("%s:%d", a, o.NodePort))
		}
		args = append(args, "--dc", d.Name+"="+strings.Join(nodes, ","))
	}
	args = append(args, "--control", o.Control)
	if !o.NoRoutes {
		args = append(args, "--routes")
	}
	if o.TunMode != "" {
		args = append(args, "--tun-mode", o.TunMode)
	}
	return append(args, o.Extra...)
}

// StartMiddlebox starts the middlebox in the gateway namespace and waits
// (up to ctx) until its control endpoint answers 200 on ReadyPath. The
// process is stopped on Close; stop it earlier with Process.Stop.
func (tb *Testbed) StartMiddlebox(ctx context.Context, o MiddleboxOptions) (*Process, error) {
	if o.Bin == "" {
		return nil, fmt.Errorf("middlebox: no binary given")
	}
	o = o.withDefaults()
	p, err := tb.Start("gw", tb.MiddleboxArgs(o))
	if err != nil {
		return nil, err
	}
	url := "http://" + o.Control + o.ReadyPath
	if err := tb.WaitHTTP(ctx, "gw", url, p); err != nil {
		p.Stop(2 * time.Second)
		return nil, fmt.Errorf("middlebox not ready: %w", err)
	}
	return p, nil
}

// WaitHTTP polls url from inside namespace role until it answers 200, ctx
// ends, or (when p is not nil) p exits.
func (tb *Testbed) WaitHTTP(ctx context.Context, role, url string, p *Process) error {
	ns, err := tb.LookupNS(role)
	if err != nil {
		return err
	}
	if err := WaitHTTP(ctx, HTTPClient(ns, 2*time.Second), url, p); err != nil {
		return fmt.Errorf("in %s: %w", role, err)
	}
	return nil
}

// WaitHTTP polls url with c until it answers 200, ctx ends, or (when p is
// not nil) p exits.
func WaitHTTP(ctx context.Context, c *http.Client, url string, p *Process) error {
	var last string
	for {
		resp, err := c.Get(url)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		var exited <-chan struct{}
		if p != nil {
			exited = p.Exited()
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("GET %s: %v (last: %s)", url, ctx.Err(), last)
			if p != nil {
				msg += "; output:\n" + tail(p.Output(), 2000)
			}
			return fmt.Errorf("%s", msg)
		case <-exited:
			return fmt.Errorf("%s exited (%v) before %s answered; output:\n%s", p.Name, p.Err(), url, tail(p.Output(), 2000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// KVSClusterArgs returns `sdnkvs kvs cluster --ips <DC's node ips> --data
// dir [extra...]` for DC dc.
func (tb *Testbed) KVSClusterArgs(bin, dc, dataDir string, extra ...string) []string {
	var ips []string
	for _, a := range tb.NodeAddrs(dc) {
		ips = append(ips, a.String())
	}
	return append([]string{bin, "kvs", "cluster", "--ips", strings.Join(ips, ","), "--data", dataDir}, extra...)
}

// StartKVSCluster starts one `sdnkvs kvs cluster` process for DC dc in its
// namespace (one node per node address) and waits, up to ctx, for its
// "cluster ready" line.
func (tb *Testbed) StartKVSCluster(ctx context.Context, bin, dc, dataDir string, extra ...string) (*Process, error) {
	if _, err := tb.DCIndex(dc); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	p, err := tb.Start(dc, tb.KVSClusterArgs(bin, dc, dataDir, extra...))
	if err != nil {
		return nil, err
	}
	if err := p.WaitOutput(ctx, "cluster ready"); err != nil {
		p.Stop(3 * time.Second)
		return nil, err
	}
	return p, nil
}

// BuildBinary builds the sdnkvs command into dir and returns its path. It
// must run inside the module (as tests do).
func BuildBinary(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(dir, "sdnkvs")
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/sdnkvs/sdnkvs/cmd/sdnkvs")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build sdnkvs: %v\n%s", err, b)
	}
	return out, nil
}
