// Package netstacktest holds the in-process test doubles of netstackio,
// kept out of the production binary (as wireguard-go keeps tuntest): an
// in-memory Device pair (MemPipe), a whole gVisor host on a Device (Host),
// and an in-memory IPv4 network of gVisor hosts with a router that plays
// the gateway kernel in front of a middlebox (Network). Every gVisor stack
// here comes from netstackio.NewGVisor.
package netstacktest
