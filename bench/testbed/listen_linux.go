//go:build linux

package testbed

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// tcpListening reports whether a TCP socket listens on addr (or on the
// wildcard address with addr's port) inside namespace ns, by reading
// /proc/thread-self/net/tcp there. It connects to nothing, so one-shot
// servers (iperf3 -1) are not disturbed.
func tcpListening(ns string, addr netip.AddrPort) (bool, error) {
	found := false
	err := InNetns(NetnsPath(ns), func() error {
		f, err := os.Open("/proc/thread-self/net/tcp")
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" { // TCP_LISTEN
				continue
			}
			ip, port, ok := strings.Cut(fields[1], ":")
			if !ok || len(ip) != 8 {
				continue
			}
			p, err := strconv.ParseUint(port, 16, 16)
			if err != nil || uint16(p) != addr.Port() {
				continue
			}
			raw, err := hex.DecodeString(ip)
			if err != nil {
				continue
			}
			var a4 [4]byte
			binary.LittleEndian.PutUint32(a4[:], binary.BigEndian.Uint32(raw))
			a := netip.AddrFrom4(a4)
			if a == addr.Addr() || a.IsUnspecified() {
				found = true
				return nil
			}
		}
		return sc.Err()
	})
	return found, err
}

// WaitListening waits until something listens on TCP addr in namespace
// role, or ctx ends.
func (tb *Testbed) WaitListening(ctx context.Context, role string, addr netip.AddrPort) error {
	ns, err := tb.LookupNS(role)
	if err != nil {
		return err
	}
	for {
		ok, err := tcpListening(ns, addr)
		if err != nil {
			return fmt.Errorf("check listener %v in %s: %w", addr, role, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nothing listens on %v in %s: %w", addr, role, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
