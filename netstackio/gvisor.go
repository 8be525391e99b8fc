package netstackio

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// GVisorNIC is the NIC id of the only interface of a stack NewGVisor makes.
const GVisorNIC tcpip.NICID = 1

// GVisorConfig describes a gVisor stack for NewGVisor.
type GVisorConfig struct {
	Addrs    []netip.Addr // addresses the stack owns (IPv4 or IPv6; at least one)
	MTU      int          // link MTU of its channel endpoint
	QueueLen int          // outbound queue of the channel endpoint in packets (default 1024)
	UDP      bool         // also speak UDP (IPv4, IPv6, TCP and ICMP always)
}

// NewGVisor makes a gVisor stack whose only interface is a channel endpoint
// (checksums validated on receive: no RX checksum offload), owning
// cfg.Addrs, with default routes through that interface. It is the one
// constructor of gVisor stacks: the middlebox's own Stack and the in-process
// test hosts use it. The caller owns both: Close and Wait the stack, then
// Close the endpoint.
func NewGVisor(cfg GVisorConfig) (*stack.Stack, *channel.Endpoint, error) {
	if len(cfg.Addrs) == 0 {
		return nil, nil, fmt.Errorf("netstackio: gVisor stack without an address")
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 1024
	}
	transports := []stack.TransportProtocolFactory{tcp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6}
	if cfg.UDP {
		transports = append(transports, udp.NewProtocol)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: transports,
	})
	ep := channel.New(cfg.QueueLen, uint32(cfg.MTU), "")
	fail := func(err error) (*stack.Stack, *channel.Endpoint, error) {
		s.Close()
		s.Wait()
		ep.Close()
		return nil, nil, err
	}
	if err := s.CreateNIC(GVisorNIC, ep); err != nil {
		return fail(fmt.Errorf("netstackio: create NIC: %s", err))
	}
	for _, a := range cfg.Addrs {
		a = a.Unmap()
		if !a.IsValid() {
			return fail(fmt.Errorf("netstackio: invalid address"))
		}
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(GVisorNIC, pa, stack.AddressProperties{}); err != nil {
			return fail(fmt.Errorf("netstackio: add %s: %s", a, err))
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: GVisorNIC},
		{Destination: header.IPv6EmptySubnet, NIC: GVisorNIC},
	})
	return s, ep, nil
}
