package kvs

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpSample reads a connection's TCP_INFO counters (ok false off TCP or
// when the kernel does not answer).
func tcpSample(c net.Conn) streamTCP {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return streamTCP{}
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return streamTCP{}
	}
	var s streamTCP
	raw.Control(func(fd uintptr) {
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return
		}
		s = streamTCP{ok: true, busyUs: ti.Busy_time, rwndUs: ti.Rwnd_limited, sndbufUs: ti.Sndbuf_limited,
			retrans: uint64(ti.Total_retrans), acked: ti.Bytes_acked, rttUs: uint64(ti.Rtt)}
	})
	return s
}
