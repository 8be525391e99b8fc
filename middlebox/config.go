package middlebox

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
)

// Config configures a Middlebox. DCs are in preference order (the first is
// the most preferred). The zero value of a field means "use the default"
// (the Default constants); Validate reports the first field that makes no
// sense, as a *ConfigError naming it.
type Config struct {
	VIP            netip.Addr
	AnycastPorts   []uint16
	MulticastPorts []uint16
	DCs            []failover.DC

	// MaxFlows bounds the flow table (default DefaultMaxFlows).
	MaxFlows int
	// IdleTimeout removes flows that saw no packet for this long (default
	// DefaultIdleTimeout).
	IdleTimeout time.Duration
	// FinLinger keeps a flow whose both FINs were seen around this long
	// for late retransmits (default DefaultFinLinger).
	FinLinger time.Duration
	// HalfOpenTimeout removes a flow whose handshake has not completed
	// this long after its SYN (default DefaultHalfOpenTimeout): SYN_SENT
	// and SYN_RECV do not live the idle timeout.
	HalfOpenTimeout time.Duration
	// MaxHalfOpenPerSource bounds the half-open flows of one client
	// address (default DefaultMaxHalfOpenPerSource); its further SYNs are
	// dropped, so a flood from few addresses holds little state.
	MaxHalfOpenPerSource int
	// MaxFlowsPerSource bounds the flows (half-open or not) of one client
	// address (default DefaultMaxFlowsPerSource; negative: no bound); its
	// further SYNs get a RST. Without it one client could open enough
	// anycast connections to fill a node's client limit (kvs
	// --maxclients), and that node would then answer forked connections
	// "-ERR max number of clients reached" where the other DCs answer:
	// a reply mismatch that takes its DC out of service.
	MaxFlowsPerSource int
	// BatchSize caps the packets per Device call (default: the device's).
	BatchSize int
	// Headroom is free space in front of the virtio-net header in each
	// buffer (default 22, making the packet offset 32).
	Headroom int

	// Fork is the policy of forked (multicast) flows: min replicas,
	// handshake and branch timeouts (zero fields: ackmerge defaults).
	Fork ackmerge.Config
	// TickInterval is how often forked flows' timers run (default
	// DefaultTickInterval).
	TickInterval time.Duration

	// Failover turns on the failure detector and its probes (nil: node
	// liveness changes only through SetNodeLive).
	Failover *FailoverConfig

	// Sequencing turns on the sequencer for some multicast ports (nil:
	// off); see SequencingConfig.
	Sequencing *SequencingConfig

	// Lifecycle turns on the DC lifecycle (nil: a DC serves again as soon
	// as it is reachable, as failover.RejoinTrust without states); see
	// LifecycleConfig.
	Lifecycle *LifecycleConfig

	// Now is the clock (default time.Now); tests pass their own.
	Now func() time.Time
}

// Defaults.
const (
	DefaultMaxFlows     = 262144
	DefaultIdleTimeout  = 5 * time.Minute
	DefaultFinLinger    = 2 * time.Second
	DefaultTickInterval = 100 * time.Millisecond

	DefaultHalfOpenTimeout      = 5 * time.Second
	DefaultMaxHalfOpenPerSource = 256
	DefaultMaxFlowsPerSource    = 4096
	defaultHeadroom             = 22
)

// MaxBranches is the largest number of branches (DCs) of a forked flow.
const MaxBranches = 8

// MaxHoldBytes bounds Fork.HoldBytes: the reply bytes a forked flow keeps
// for a branch removal (ackmerge.Config.HoldBytes).
const MaxHoldBytes = 64 << 10

// MinIdleTimeout is the shortest idle timeout.
const MinIdleTimeout = time.Second

// MinProbeInterval is the shortest interval between probes of one node.
const MinProbeInterval = 10 * time.Millisecond

// ConfigError is a configuration error about one field of Config. Field
// is the field's path, e.g. "VIP", "DCs" or "Failover.ProbePort", so a
// caller (the CLI) can name its own flag for it.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return "middlebox: Config." + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// withDefaults fills zero fields with their defaults and unmaps the VIP.
func (c Config) withDefaults() Config {
	c.VIP = c.VIP.Unmap()
	if c.MaxFlows == 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.FinLinger == 0 {
		c.FinLinger = DefaultFinLinger
	}
	if c.HalfOpenTimeout == 0 {
		c.HalfOpenTimeout = DefaultHalfOpenTimeout
	}
	if c.MaxHalfOpenPerSource == 0 {
		c.MaxHalfOpenPerSource = DefaultMaxHalfOpenPerSource
	}
	if c.MaxFlowsPerSource == 0 {
		c.MaxFlowsPerSource = DefaultMaxFlowsPerSource
	}
	if c.TickInterval <= 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.Headroom == 0 {
		c.Headroom = defaultHeadroom
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Failover != nil {
		fc := *c.Failover
		if fc.ProbePort == 0 {
			fc.ProbePort = prober.ReadyPort
		}
		c.Failover = &fc
	}
	if c.Sequencing != nil {
		sc := c.Sequencing.withDefaults()
		c.Sequencing = &sc
	}
	return c
}

// Validate reports the first field of c that makes no sense, as a
// *ConfigError. Zero fields are valid (they take defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	if !c.VIP.IsValid() {
		return fieldErr("VIP", "no VIP")
	}
	if !c.VIP.Is4() || c.VIP.IsUnspecified() || c.VIP.IsMulticast() {
		return fieldErr("VIP", "%s is not a unicast IPv4 address (only IPv4 is supported)", c.VIP)
	}
	if len(c.AnycastPorts) == 0 && len(c.MulticastPorts) == 0 {
		return fieldErr("AnycastPorts", "no service port (anycast or multicast)")
	}
	anycast := map[uint16]bool{}
	for _, p := range c.AnycastPorts {
		if p == 0 {
			return fieldErr("AnycastPorts", "port 0")
		}
		anycast[p] = true
	}
	for _, p := range c.MulticastPorts {
		if p == 0 {
			return fieldErr("MulticastPorts", "port 0")
		}
		if anycast[p] {
			return fieldErr("MulticastPorts", "port %d is both multicast and anycast", p)
		}
	}
	if err := failover.ValidateTopology(c.DCs); err != nil {
		return &ConfigError{Field: "DCs", Err: err}
	}
	n := 0
	for _, dc := range c.DCs {
		for _, nd := range dc.Nodes {
			if !nd.Addr().Unmap().Is4() || nd.Port() == 0 {
				return fieldErr("DCs", "DC %q: node %s is not an IPv4 address with a port", dc.Name, nd)
			}
			if nd.Addr().Unmap() == c.VIP {
				return fieldErr("DCs", "DC %q: node %s is the VIP", dc.Name, nd)
			}
			n++
		}
	}
	if n > 65535 {
		return fieldErr("DCs", "%d nodes, at most 65535", n)
	}
	if c.MaxFlows < 1 || c.MaxFlows > 1<<24 {
		return fieldErr("MaxFlows", "%d out of range [1, %d]", c.MaxFlows, 1<<24)
	}
	if c.IdleTimeout < MinIdleTimeout {
		return fieldErr("IdleTimeout", "%v is shorter than %v", c.IdleTimeout, MinIdleTimeout)
	}
	if c.FinLinger < 0 {
		return fieldErr("FinLinger", "%v is negative", c.FinLinger)
	}
	if c.HalfOpenTimeout < 0 {
		return fieldErr("HalfOpenTimeout", "%v is negative", c.HalfOpenTimeout)
	}
	if c.MaxHalfOpenPerSource < 0 {
		return fieldErr("MaxHalfOpenPerSource", "%d is negative", c.MaxHalfOpenPerSource)
	}
	if c.Fork.MinReplicas < 0 || c.Fork.MinReplicas > MaxBranches {
		return fieldErr("Fork.MinReplicas", "%d out of range [1, %d]", c.Fork.MinReplicas, MaxBranches)
	}
	if c.Fork.MinReplicas > len(c.DCs) {
		return fieldErr("Fork.MinReplicas", "%d is more than the %d DCs", c.Fork.MinReplicas, len(c.DCs))
	}
	if c.Fork.HandshakeTimeout < 0 {
		return fieldErr("Fork.HandshakeTimeout", "%v is negative", c.Fork.HandshakeTimeout)
	}
	if c.Fork.BranchTimeout < 0 {
		return fieldErr("Fork.BranchTimeout", "%v is negative", c.Fork.BranchTimeout)
	}
	if c.Fork.HoldBytes > MaxHoldBytes {
		return fieldErr("Fork.HoldBytes", "%d is above %d", c.Fork.HoldBytes, MaxHoldBytes)
	}
	if len(c.MulticastPorts) > 0 {
		// A forked flow must outlive its handshake timeout, after which it
		// goes on with the DCs that answered.
		hs := c.Fork.HandshakeTimeout
		if hs <= 0 {
			hs = 3 * time.Second // ackmerge's default
		}
		if c.HalfOpenTimeout <= hs {
			return fieldErr("HalfOpenTimeout", "%v does not exceed the forked flows' handshake timeout %v", c.HalfOpenTimeout, hs)
		}
	}
	if c.Sequencing != nil {
		if err := c.Sequencing.validate(c.MulticastPorts); err != nil {
			return err
		}
	}
	if c.Lifecycle != nil {
		if err := c.Lifecycle.Validate(); err != nil {
			return &ConfigError{Field: "Lifecycle", Err: err}
		}
		if len(c.DCs) > failover.MaxLifecycleDCs {
			return fieldErr("Lifecycle", "%d DCs, at most %d with a lifecycle", len(c.DCs), failover.MaxLifecycleDCs)
		}
		if c.Lifecycle.Mode == failover.RejoinCatchup && c.Sequencing == nil {
			return fieldErr("Lifecycle.Mode", "catch-up needs the sequencer (order streams to the nodes); use manual or trust")
		}
	}
	if c.Failover != nil {
		return c.Failover.validate(c.DCs)
	}
	return nil
}
