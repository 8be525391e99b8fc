package kvs

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// dialControl sets IP_BIND_ADDRESS_NO_PORT on peer connections, which bind
// their source IP (dialFrom): the port is then picked at connect time, from
// connect's share of the ephemeral range, instead of being reserved by
// bind, which would take ports from the range listeners' port 0 uses.
func dialControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
