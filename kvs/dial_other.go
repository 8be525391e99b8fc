//go:build !linux

package kvs

import "syscall"

// dialControl: nothing to set outside Linux.
func dialControl(network, address string, c syscall.RawConn) error { return nil }
