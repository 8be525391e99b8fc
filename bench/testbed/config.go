//go:build linux

package testbed

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// Fixed addresses of the topology (docs/design.md section 3).
var (
	// VIP is the service address the middlebox owns in the gateway namespace.
	VIP = netip.MustParseAddr("10.200.100.1")
	// GatewayClientAddr is the gateway's address on client 1's link.
	GatewayClientAddr = netip.MustParseAddr("10.200.1.1")
	// ClientAddr is client 1's address.
	ClientAddr = netip.MustParseAddr("10.200.1.2")
)

// DC describes one datacentre: a namespace holding Nodes node addresses and
// the emulated link joining it to the gateway.
type DC struct {
	// Name is short, lower-case letters and digits (e.g. "sydney").
	Name string
	// Nodes is how many node addresses the DC holds (10.210.k.11 ...).
	Nodes int
	// Delay is the one-way delay of the link, each direction.
	Delay time.Duration
	// Rate caps the link, each direction, in bits per second of IP packets;
	// zero means unlimited.
	Rate uint64
	// Loss is the probability (0..1) that a packet is dropped, each
	// direction, independently.
	Loss float64
	// QueueBytes bounds each direction's queue (drop-tail); zero picks a
	// default sized for the link's bandwidth-delay product with headroom.
	QueueBytes int
	// TCPBuffers is the most a TCP socket's buffers grow to in the DC's
	// namespace (the maximum of net.ipv4.tcp_rmem and tcp_wmem, up to
	// which the kernel autotunes them): an operator raises it on hosts
	// that talk across a long fat WAN, as ESnet's host tuning advises.
	// Zero picks DefaultTCPBuffers; -1 keeps the kernel's defaults (4 MiB
	// send, 6 MiB receive), which hold less than a 100 Mbit/s stream has
	// in flight over a 350 ms round trip.
	TCPBuffers int
}

// DefaultTCPBuffers is the default DC.TCPBuffers: room for twice the
// bandwidth-delay product of a 100 Mbit/s link over a 350 ms round trip
// (4.4 MB; BBR keeps up to twice that in flight) with the kernel's
// per-packet overhead.
const DefaultTCPBuffers = 16 << 20

// MaxNodes is the most node addresses a DC may have.
const MaxNodes = 200

// Emulated reports whether the link needs the user-space delay line (any
// delay, rate or loss); otherwise it is a plain veth pair.
func (d DC) Emulated() bool { return d.Delay > 0 || d.Rate > 0 || d.Loss > 0 }

// Config is a whole topology. DCs are listed in preference order; DC k
// (1-based) gets 10.210.k.0/24 and link 10.220.k.0/24.
type Config struct {
	// Name is the run id prefixed to every namespace; empty means a fresh
	// "sk" + 6 hex digits.
	Name string
	DCs  []DC
	// Clients is the number of client namespaces (default 1). Client j
	// (1-based) is 10.200.j.2 behind gateway address 10.200.j.1.
	Clients int
}

var (
	dcNameRE  = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)
	runNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_]{0,15}$`)
)

// NewRunID returns a fresh run id: "sk" and 6 random hex digits.
func NewRunID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "sk" + hex.EncodeToString(b[:])
}

// WithDefaults fills in the defaults and validates the configuration: the
// one validator of a topology (the testbed CLI, the demo and the
// experiments all go through it).
func (c Config) WithDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = NewRunID()
	}
	if !runNameRE.MatchString(c.Name) {
		return c, fmt.Errorf("testbed name %q: want 1-16 letters, digits or _", c.Name)
	}
	if c.Clients == 0 {
		c.Clients = 1
	}
	if c.Clients < 1 || c.Clients > 50 {
		return c, fmt.Errorf("clients = %d: want 1..50", c.Clients)
	}
	if len(c.DCs) == 0 {
		return c, errors.New("no DC configured")
	}
	if len(c.DCs) > 200 {
		return c, fmt.Errorf("%d DCs: at most 200", len(c.DCs))
	}
	dcs := make([]DC, len(c.DCs))
	seen := map[string]bool{}
	for i, d := range c.DCs {
		if !dcNameRE.MatchString(d.Name) {
			return c, fmt.Errorf("DC name %q: want a lower-case letter then up to 11 letters or digits", d.Name)
		}
		if d.Name == "gw" || d.Name == "client" || (len(d.Name) > 6 && d.Name[:6] == "client") {
			return c, fmt.Errorf("DC name %q is reserved", d.Name)
		}
		if seen[d.Name] {
			return c, fmt.Errorf("DC %q listed twice", d.Name)
		}
		seen[d.Name] = true
		if d.Nodes == 0 {
			d.Nodes = 1
		}
		if d.Nodes < 1 || d.Nodes > MaxNodes {
			return c, fmt.Errorf("DC %s: nodes = %d: want 1..%d", d.Name, d.Nodes, MaxNodes)
		}
		if d.Delay < 0 || d.Delay > 10*time.Second {
			return c, fmt.Errorf("DC %s: delay %v out of range 0..10s", d.Name, d.Delay)
		}
		if d.Loss < 0 || d.Loss >= 1 {
			return c, fmt.Errorf("DC %s: loss %v: want 0 <= loss < 1", d.Name, d.Loss)
		}
		if d.QueueBytes < 0 {
			return c, fmt.Errorf("DC %s: queue %d bytes is negative", d.Name, d.QueueBytes)
		}
		if d.QueueBytes == 0 {
			d.QueueBytes = DefaultQueueBytes(d.Rate, d.Delay)
		}
		switch {
		case d.TCPBuffers == 0:
			d.TCPBuffers = DefaultTCPBuffers
		case d.TCPBuffers != -1 && (d.TCPBuffers < 1<<20 || d.TCPBuffers > 1<<30):
			return c, fmt.Errorf("DC %s: TCP buffers of %d bytes: want 1 MiB..1 GiB, or -1 for the kernel's defaults", d.Name, d.TCPBuffers)
		}
		dcs[i] = d
	}
	c.DCs = dcs
	return c, nil
}

// DefaultQueueBytes is the default per-direction queue of a link: twice its
// bandwidth-delay product (round trip 2*delay + 2 ms) with a floor of
// 100 full-size packets; 4 MiB when the rate is unlimited.
func DefaultQueueBytes(rate uint64, delay time.Duration) int {
	const floor = 100 * 1500
	if rate == 0 {
		return 4 << 20
	}
	rtt := 2*delay + 2*time.Millisecond
	bdp := float64(rate) / 8 * rtt.Seconds()
	return max(floor, int(2*bdp))
}

// NodeAddr returns the address of node i (0-based) of DC k (1-based).
func NodeAddr(k, i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 210, byte(k), byte(11 + i)}) }

// LinkGatewayAddr is the gateway's address on DC k's link.
func LinkGatewayAddr(k int) netip.Addr { return netip.AddrFrom4([4]byte{10, 220, byte(k), 1}) }

// LinkDCAddr is DC k's address on its link to the gateway.
func LinkDCAddr(k int) netip.Addr { return netip.AddrFrom4([4]byte{10, 220, byte(k), 2}) }

// ClientAddrN is client j's (1-based) address.
func ClientAddrN(j int) netip.Addr { return netip.AddrFrom4([4]byte{10, 200, byte(j), 2}) }

// GatewayClientAddrN is the gateway's address on client j's link.
func GatewayClientAddrN(j int) netip.Addr { return netip.AddrFrom4([4]byte{10, 200, byte(j), 1}) }

func clientRole(j int) string {
	if j == 1 {
		return "client"
	}
	return fmt.Sprintf("client%d", j)
}
