//go:build !linux

package kvs

import "net"

// tcpSample has no TCP_INFO off Linux: served streams are not measured.
func tcpSample(net.Conn) streamTCP { return streamTCP{} }
