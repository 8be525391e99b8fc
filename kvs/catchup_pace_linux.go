package kvs

import (
	"net"

	"golang.org/x/sys/unix"
)

// paceCatchup caps a catch-up stream's send rate at the node's
// --catchup-rate (plus 1/8 for framing and TCP/IP headers, so the driver's
// token bucket stays the limit) with SO_MAX_PACING_RATE: the kernel spaces
// the packets out (TCP's internal pacing, any qdisc) instead of sending
// each page as a burst at line rate into the WAN bottleneck's queue,
// where it would delay the live writes that share the link.
func (n *Node) paceCatchup(c net.Conn) {
	r := n.cfg.CatchupRate
	tc, ok := c.(*net.TCPConn)
	if r <= 0 || !ok {
		return
	}
	pace := min(uint64(r)+uint64(r)/8, 1<<32-2)
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, pace)
	}); err == nil && serr != nil {
		n.log.Warn("catch-up: cannot pace the stream (SO_MAX_PACING_RATE)", "err", serr)
	}
}
