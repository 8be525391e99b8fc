//go:build linux

package goodput

import "golang.org/x/sys/unix"

// bytesAcked is how many payload bytes the peer of socket fd has
// acknowledged (TCP_INFO), or -1 if unknown.
func bytesAcked(fd uintptr) int64 {
	ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return -1
	}
	return max(0, int64(ti.Bytes_acked)-1) // bytes_acked counts the SYN
}
