package middlebox

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// orderDialControl sets TCP_USER_TIMEOUT on an order stream connection:
// the kernel aborts it once sent bytes stay unacknowledged for
// orderUserTimeout, so a stream cut off with its DC ends and is redialed,
// instead of lingering in exponential retransmission backoff past the
// heal (order.go, "Dead connections").
func orderDialControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(orderUserTimeout/time.Millisecond))
	})
	if err != nil {
		return err
	}
	return serr
}
