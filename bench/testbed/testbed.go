//go:build linux

package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Testbed is a running topology. Its methods are safe for concurrent use;
// Close is idempotent.
type Testbed struct {
	cfg Config

	mu     sync.Mutex
	nss    []string // created namespaces, in creation order
	links  map[string]*link
	procs  []*Process
	closed bool
}

// link is one DC's connection to the gateway.
type link struct {
	k      int
	dc     DC
	gwIf   string // interface name in the gateway namespace
	dcIf   string // interface name in the DC namespace
	cut    atomic.Bool
	files  []*tunFD   // TUN fds (emulated links)
	up, dn *DelayLine // gw->dc, dc->gw (emulated links)
}

// LinkStatus describes one DC link for status output.
type LinkStatus struct {
	DC     string        `json:"dc"`
	Index  int           `json:"index"`
	NS     string        `json:"ns"`
	Kind   string        `json:"kind"` // "veth" or "tun"
	GwIf   string        `json:"gw_if"`
	DCIf   string        `json:"dc_if"`
	Delay  time.Duration `json:"delay_ns"`
	Rate   uint64        `json:"rate_bps"`
	Loss   float64       `json:"loss"`
	Queue  int           `json:"queue_bytes"`
	Cut    bool          `json:"cut"`
	Nodes  []string      `json:"nodes"`
	ToDC   *LineStats    `json:"to_dc,omitempty"`
	FromDC *LineStats    `json:"from_dc,omitempty"`
}

// Up builds the topology described by cfg. On error everything created so
// far is torn down.
func Up(cfg Config) (*Testbed, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("testbed needs iproute2's ip command")
	}
	tb := &Testbed{cfg: cfg, links: map[string]*link{}}
	if err := tb.build(); err != nil {
		tb.Close()
		return nil, err
	}
	return tb, nil
}

// Config returns the configuration with defaults filled in.
func (tb *Testbed) Config() Config { return tb.cfg }

// Name is the run id.
func (tb *Testbed) Name() string { return tb.cfg.Name }

// NS returns the namespace name for a role: "client" (or "client2" ...),
// "gw", or a DC name. It panics on an unknown role (a programming error);
// use [Testbed.LookupNS] for user input.
func (tb *Testbed) NS(role string) string {
	ns, err := tb.LookupNS(role)
	if err != nil {
		panic(err)
	}
	return ns
}

// LookupNS is NS with an error for unknown roles.
func (tb *Testbed) LookupNS(role string) (string, error) {
	if role == "gw" {
		return tb.cfg.Name + "-gw", nil
	}
	for j := 1; j <= tb.cfg.Clients; j++ {
		if role == clientRole(j) {
			return tb.cfg.Name + "-" + role, nil
		}
	}
	for _, d := range tb.cfg.DCs {
		if d.Name == role {
			return tb.cfg.Name + "-" + role, nil
		}
	}
	return "", fmt.Errorf("unknown namespace %q (want client, gw or a DC: %s)", role, tb.dcNames())
}

// Namespaces maps every role to its namespace name.
func (tb *Testbed) Namespaces() map[string]string {
	m := map[string]string{"gw": tb.NS("gw")}
	for j := 1; j <= tb.cfg.Clients; j++ {
		m[clientRole(j)] = tb.NS(clientRole(j))
	}
	for _, d := range tb.cfg.DCs {
		m[d.Name] = tb.NS(d.Name)
	}
	return m
}

func (tb *Testbed) dcNames() string {
	s := ""
	for i, d := range tb.cfg.DCs {
		if i > 0 {
			s += ","
		}
		s += d.Name
	}
	return s
}

// DCIndex returns the 1-based index of DC name (its preference rank).
func (tb *Testbed) DCIndex(name string) (int, error) {
	for i, d := range tb.cfg.DCs {
		if d.Name == name {
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("unknown DC %q (DCs: %s)", name, tb.dcNames())
}

// NodeAddrs returns the node addresses of DC name.
func (tb *Testbed) NodeAddrs(name string) []netip.Addr {
	k, err := tb.DCIndex(name)
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, tb.cfg.DCs[k-1].Nodes)
	for i := range out {
		out[i] = NodeAddr(k, i)
	}
	return out
}

func (tb *Testbed) addNS(role string) (string, error) {
	ns := tb.cfg.Name + "-" + role
	if netnsExists(ns) {
		return "", fmt.Errorf("namespace %s already exists (another testbed with name %s?)", ns, tb.cfg.Name)
	}
	if err := runIP("netns", "add", ns); err != nil {
		return "", err
	}
	tb.mu.Lock()
	tb.nss = append(tb.nss, ns)
	tb.mu.Unlock()
	// Loopback up; no IPv6 chatter (router solicitations, MLD) on links.
	if err := ipBatch(ns, "link set lo up"); err != nil {
		return "", err
	}
	return ns, sysctls(ns, map[string]string{
		"net/ipv6/conf/all/disable_ipv6":     "1",
		"net/ipv6/conf/default/disable_ipv6": "1",
	})
}

func (tb *Testbed) build() error {
	gw, err := tb.addNS("gw")
	if err != nil {
		return err
	}
	if err := sysctls(gw, map[string]string{
		"net/ipv4/ip_forward":                  "1",
		"net/ipv4/conf/all/rp_filter":          "0",
		"net/ipv4/conf/default/rp_filter":      "0",
		"net/ipv4/conf/all/accept_local":       "1",
		"net/ipv4/conf/default/send_redirects": "0",
		"net/ipv4/conf/all/send_redirects":     "0",
	}); err != nil {
		return err
	}
	var gwIfs []string
	for j := 1; j <= tb.cfg.Clients; j++ {
		role := clientRole(j)
		cns, err := tb.addNS(role)
		if err != nil {
			return err
		}
		gif := fmt.Sprintf("cli%d", j)
		if err := ipBatch(gw,
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", gif, cns),
			fmt.Sprintf("addr add %s/24 dev %s", GatewayClientAddrN(j), gif),
			fmt.Sprintf("link set %s up", gif),
		); err != nil {
			return err
		}
		if err := ipBatch(cns,
			fmt.Sprintf("addr add %s/24 dev eth0", ClientAddrN(j)),
			"link set eth0 up",
			fmt.Sprintf("route add default via %s", GatewayClientAddrN(j)),
		); err != nil {
			return err
		}
		gwIfs = append(gwIfs, gif)
	}
	for i, d := range tb.cfg.DCs {
		k := i + 1
		dns, err := tb.addNS(d.Name)
		if err != nil {
			return err
		}
		if d.TCPBuffers > 0 {
			// The kernel's socket buffer autotuning grows up to these
			// maxima (config.go, DC.TCPBuffers).
			if err := sysctls(dns, map[string]string{
				"net/ipv4/tcp_rmem": fmt.Sprintf("4096 131072 %d", d.TCPBuffers),
				"net/ipv4/tcp_wmem": fmt.Sprintf("4096 16384 %d", d.TCPBuffers),
			}); err != nil {
				return err
			}
		}
		l := &link{k: k, dc: d, gwIf: fmt.Sprintf("dc%d", k), dcIf: "gw0"}
		tb.mu.Lock()
		tb.links[d.Name] = l
		tb.mu.Unlock()
		if d.Emulated() {
			if err := tb.buildTUNLink(l, gw, dns); err != nil {
				return fmt.Errorf("DC %s link: %w", d.Name, err)
			}
		} else if err := ipBatch(gw, fmt.Sprintf("link add %s type veth peer name %s netns %s", l.gwIf, l.dcIf, dns)); err != nil {
			return err
		}
		if err := ipBatch(gw,
			fmt.Sprintf("addr add %s/24 dev %s", LinkGatewayAddr(k), l.gwIf),
			fmt.Sprintf("link set %s up", l.gwIf),
			fmt.Sprintf("route add 10.210.%d.0/24 via %s dev %s", k, LinkDCAddr(k), l.gwIf),
		); err != nil {
			return err
		}
		lines := []string{
			fmt.Sprintf("addr add %s/24 dev %s", LinkDCAddr(k), l.dcIf),
			fmt.Sprintf("link set %s up", l.dcIf),
			fmt.Sprintf("route add default via %s dev %s", LinkGatewayAddr(k), l.dcIf),
		}
		for n := 0; n < d.Nodes; n++ {
			lines = append(lines, fmt.Sprintf("addr add %s/32 dev lo", NodeAddr(k, n)))
		}
		if err := ipBatch(dns, lines...); err != nil {
			return err
		}
		gwIfs = append(gwIfs, l.gwIf)
	}
	kv := map[string]string{}
	for _, ifn := range gwIfs {
		kv["net/ipv4/conf/"+ifn+"/rp_filter"] = "0"
	}
	return sysctls(gw, kv)
}

// buildTUNLink creates the TUN pair of an emulated link and starts its two
// delay lines.
func (tb *Testbed) buildTUNLink(l *link, gw, dns string) error {
	gf, err := openTUN(gw, l.gwIf)
	if err != nil {
		return err
	}
	l.files = append(l.files, gf)
	df, err := openTUN(dns, l.dcIf)
	if err != nil {
		return err
	}
	l.files = append(l.files, df)
	for _, x := range []struct{ ns, ifn string }{{gw, l.gwIf}, {dns, l.dcIf}} {
		if err := ipBatch(x.ns, fmt.Sprintf("link set %s mtu 1500 txqueuelen 1000", x.ifn)); err != nil {
			return err
		}
	}
	cfg := LineConfig{Delay: l.dc.Delay, Rate: l.dc.Rate, Loss: l.dc.Loss, QueueBytes: l.dc.QueueBytes}
	l.up = NewDelayLine(gf, df, cfg, &l.cut)
	l.dn = NewDelayLine(df, gf, cfg, &l.cut)
	return nil
}

func (tb *Testbed) link(dc string) (*link, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return nil, errors.New("testbed is closed")
	}
	l, ok := tb.links[dc]
	if !ok {
		return nil, fmt.Errorf("unknown DC %q (DCs: %s)", dc, tb.dcNames())
	}
	return l, nil
}

// Cut makes DC dc unreachable, as in a disaster: every packet on its link
// is silently dropped both ways until Heal.
func (tb *Testbed) Cut(dc string) error {
	l, err := tb.link(dc)
	if err != nil {
		return err
	}
	if l.up != nil {
		l.cut.Store(true)
		return nil
	}
	if err := ipBatch(tb.NS(dc), fmt.Sprintf("link set %s down", l.dcIf)); err != nil {
		return err
	}
	l.cut.Store(true)
	return nil
}

// Heal restores a cut DC's link.
func (tb *Testbed) Heal(dc string) error {
	l, err := tb.link(dc)
	if err != nil {
		return err
	}
	if l.up != nil {
		l.cut.Store(false)
		return nil
	}
	// Setting the veth down removed the DC's default route: put it back.
	if err := ipBatch(tb.NS(dc),
		fmt.Sprintf("link set %s up", l.dcIf),
		fmt.Sprintf("route replace default via %s dev %s", LinkGatewayAddr(l.k), l.dcIf),
	); err != nil {
		return err
	}
	l.cut.Store(false)
	return nil
}

// Links describes every DC link, in preference order.
func (tb *Testbed) Links() []LinkStatus {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []LinkStatus
	for _, l := range tb.links {
		st := LinkStatus{
			DC: l.dc.Name, Index: l.k, NS: tb.cfg.Name + "-" + l.dc.Name, Kind: "veth",
			GwIf: l.gwIf, DCIf: l.dcIf, Delay: l.dc.Delay, Rate: l.dc.Rate, Loss: l.dc.Loss,
			Queue: l.dc.QueueBytes, Cut: l.cut.Load(),
		}
		for n := 0; n < l.dc.Nodes; n++ {
			st.Nodes = append(st.Nodes, NodeAddr(l.k, n).String())
		}
		if l.up != nil {
			st.Kind = "tun"
			a, b := l.up.Stats(), l.dn.Stats()
			st.ToDC, st.FromDC = &a, &b
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// Command returns an unstarted command running argv in namespace role.
// The caller owns it (and must end it); prefer Exec or Start.
func (tb *Testbed) Command(role string, argv ...string) (*exec.Cmd, error) {
	ns, err := tb.LookupNS(role)
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...), nil
}

// Exec runs argv in namespace role (client, gw or a DC name) to completion
// and returns its combined output. ctx bounds it; on expiry it is killed.
func (tb *Testbed) Exec(ctx context.Context, role string, argv ...string) ([]byte, error) {
	ns, err := tb.LookupNS(role)
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("exec: empty command")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w", argv[0], role, err)
	}
	return out, nil
}

// Start starts argv in namespace role and returns its handle. The process
// is killed by PID when the testbed closes, if still running. env entries
// ("K=V") are added to this process's environment.
func (tb *Testbed) Start(role string, argv []string, env ...string) (*Process, error) {
	ns, err := tb.LookupNS(role)
	if err != nil {
		return nil, err
	}
	tb.mu.Lock()
	if tb.closed {
		tb.mu.Unlock()
		return nil, errors.New("testbed is closed")
	}
	tb.mu.Unlock()
	p, err := StartProcess(ns, argv, env...)
	if err != nil {
		return nil, err
	}
	tb.mu.Lock()
	tb.procs = append(tb.procs, p)
	tb.mu.Unlock()
	return p, nil
}

// Close stops every process started through the testbed (SIGTERM, then
// SIGKILL after 3 s), stops the delay lines, and deletes every namespace.
// It is idempotent and returns the first error met.
func (tb *Testbed) Close() error {
	tb.mu.Lock()
	if tb.closed {
		tb.mu.Unlock()
		return nil
	}
	tb.closed = true
	procs, links, nss := tb.procs, tb.links, tb.nss
	tb.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(3 * time.Second) }()
	}
	wg.Wait()
	for _, l := range links {
		if l.up != nil {
			l.up.Close()
			l.dn.Close()
			l.up.Wait() // readers notice within one poll interval
			l.dn.Wait()
		}
		for _, f := range l.files {
			_ = f.Close()
		}
	}
	var first error
	for i := len(nss) - 1; i >= 0; i-- {
		if err := runIP("netns", "del", nss[i]); err != nil && netnsExists(nss[i]) && first == nil {
			first = err
		}
	}
	return first
}
