//go:build !linux

package middlebox

import "syscall"

// orderDialControl: no TCP_USER_TIMEOUT here; keepalives and the write
// timeout bound a dead order stream (order.go, "Dead connections").
func orderDialControl(network, address string, c syscall.RawConn) error { return nil }
