package middlebox

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
)

// DC is one datacentre: a name and its interchangeable node addresses.
type DC struct {
	Name  string
	Nodes []netip.AddrPort
}

// Config configures a Middlebox. DCs are in preference order (the first is
// the most preferred).
type Config struct {
	VIP            netip.Addr
	AnycastPorts   []uint16
	MulticastPorts []uint16
	DCs            []DC

	// MaxFlows bounds the flow table (default DefaultMaxFlows).
	MaxFlows int
	// IdleTimeout removes flows that saw no packet for this long (default
	// DefaultIdleTimeout).
	IdleTimeout time.Duration
	// FinLinger keeps a flow whose both FINs were seen (or whose SYN was
	// never answered) around this long for late retransmits (default
	// DefaultFinLinger).
	FinLinger time.Duration
	// BatchSize caps the packets per Device call (default: the device's).
	BatchSize int
	// Headroom is free space in front of the virtio-net header in each
	// buffer (default 22, making the packet offset 32).
	Headroom int

	// Fork is the policy of forked (multicast) flows: min replicas,
	// handshake and branch timeouts (zero fields: ackmerge defaults).
	Fork ackmerge.Config
	// TickInterval is how often forked flows' timers run (default 100ms).
	TickInterval time.Duration

	// Failover turns on the failure detector and its probes (nil: node
	// liveness changes only through SetNodeLive).
	Failover *FailoverConfig

	// Now is the clock (default time.Now); tests pass their own.
	Now func() time.Time
}

// Defaults.
const (
	DefaultMaxFlows    = 262144
	DefaultIdleTimeout = 5 * time.Minute
	DefaultFinLinger   = 2 * time.Second
	defaultHeadroom    = 22
)

// MaxBranches is the largest number of branches (DCs) of a forked flow.
const MaxBranches = 8

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	if !c.VIP.IsValid() {
		return errors.New("middlebox: no VIP")
	}
	if !c.VIP.Is4() && !c.VIP.Is4In6() {
		return fmt.Errorf("middlebox: VIP %s is not IPv4 (only IPv4 is supported)", c.VIP)
	}
	c.VIP = c.VIP.Unmap()
	if len(c.AnycastPorts) == 0 && len(c.MulticastPorts) == 0 {
		return errors.New("middlebox: no service port (anycast or multicast)")
	}
	seen := map[uint16]string{}
	for _, p := range c.AnycastPorts {
		if p == 0 {
			return errors.New("middlebox: anycast port 0")
		}
		seen[p] = "anycast"
	}
	for _, p := range c.MulticastPorts {
		if p == 0 {
			return errors.New("middlebox: multicast port 0")
		}
		if seen[p] == "anycast" {
			return fmt.Errorf("middlebox: port %d is both multicast and anycast", p)
		}
	}
	if c.Fork.MinReplicas > MaxBranches {
		return fmt.Errorf("middlebox: min replicas %d above %d", c.Fork.MinReplicas, MaxBranches)
	}
	if c.TickInterval <= 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if len(c.DCs) == 0 {
		return errors.New("middlebox: no DC")
	}
	names := map[string]bool{}
	nodes := map[netip.AddrPort]string{}
	for _, dc := range c.DCs {
		if dc.Name == "" {
			return errors.New("middlebox: DC with an empty name")
		}
		if names[dc.Name] {
			return fmt.Errorf("middlebox: DC %q given twice", dc.Name)
		}
		names[dc.Name] = true
		if len(dc.Nodes) == 0 {
			return fmt.Errorf("middlebox: DC %q has no node", dc.Name)
		}
		for _, n := range dc.Nodes {
			if !n.Addr().Unmap().Is4() || n.Port() == 0 {
				return fmt.Errorf("middlebox: DC %q: node %s is not an IPv4 address with a port", dc.Name, n)
			}
			if n.Addr().Unmap() == c.VIP {
				return fmt.Errorf("middlebox: DC %q: node %s is the VIP", dc.Name, n)
			}
			if other, ok := nodes[n]; ok {
				return fmt.Errorf("middlebox: node %s is in DC %q and DC %q", n, other, dc.Name)
			}
			nodes[n] = dc.Name
		}
	}
	if len(nodes) > 65535 {
		return errors.New("middlebox: too many nodes")
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	if c.MaxFlows < 1 || c.MaxFlows > 1<<24 {
		return fmt.Errorf("middlebox: max flows %d out of range [1, %d]", c.MaxFlows, 1<<24)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.IdleTimeout < 0 {
		return errors.New("middlebox: negative idle timeout")
	}
	if c.FinLinger == 0 {
		c.FinLinger = DefaultFinLinger
	}
	if c.Headroom == 0 {
		c.Headroom = defaultHeadroom
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// ParseDC parses a DC spec "name=ip:port,ip:port,...".
func ParseDC(spec string) (DC, error) {
	name, list, ok := strings.Cut(spec, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.TrimSpace(list) == "" {
		return DC{}, fmt.Errorf("DC spec %q: want name=ip:port[,ip:port...]", spec)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return DC{}, fmt.Errorf("DC spec %q: name %q may hold only letters, digits, '-' and '_'", spec, name)
		}
	}
	dc := DC{Name: name}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return DC{}, fmt.Errorf("DC spec %q: node %q: want ip:port", spec, s)
		}
		if !ap.Addr().Unmap().Is4() || ap.Port() == 0 {
			return DC{}, fmt.Errorf("DC spec %q: node %q: want an IPv4 address and a non-zero port", spec, s)
		}
		dc.Nodes = append(dc.Nodes, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return dc, nil
}

// ParsePorts parses a comma-separated list of TCP ports.
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.ParseUint(f, 10, 16)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("port %q: want 1..65535", f)
		}
		out = append(out, uint16(v))
	}
	return out, nil
}
