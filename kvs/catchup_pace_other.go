//go:build !linux

package kvs

import "net"

// paceCatchup does nothing off Linux (no SO_MAX_PACING_RATE): the
// driver's token bucket alone limits the rate.
func (n *Node) paceCatchup(net.Conn) {}
