//go:build !linux

package testbed

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio"
)

// The testbed is network namespaces, TUN devices and a real-time delay
// line: Linux only. Elsewhere the package builds and every operation that
// needs Linux fails with errNotLinux.

var errNotLinux = errors.New("testbed: network namespaces need Linux")

// NetnsPath is where a named namespace would be bound.
func NetnsPath(name string) string { return filepath.Join("/run/netns", name) }

// InNetns is only implemented on Linux.
func InNetns(nsPath string, fn func() error) error { return netstackio.InNetns(nsPath, fn) }

// DialInNetns is only implemented on Linux.
func DialInNetns(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	return nil, errNotLinux
}

// HTTPClient returns a client whose every request fails: namespaces need
// Linux.
func HTTPClient(ns string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return nil, errNotLinux },
	}}
}

func runIP(args ...string) error                    { return errNotLinux }
func ipBatch(ns string, lines ...string) error      { return errNotLinux }
func sysctls(ns string, kv map[string]string) error { return errNotLinux }
func netnsExists(name string) bool                  { return false }
func openTUN(ns, ifname string) (*tunFD, error)     { return nil, errNotLinux }
func realtimeThread()                               {}
func fineTimerSlack()                               {}
func nanosleep(d int64)                             { time.Sleep(time.Duration(d)) }
func dieWithParent() *syscall.SysProcAttr           { return nil }

// WaitListening is only implemented on Linux.
func (tb *Testbed) WaitListening(ctx context.Context, role string, addr netip.AddrPort) error {
	return errNotLinux
}
