//go:build linux

package testbed

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio"
	"golang.org/x/sys/unix"
)

// NetnsPath is where `ip netns` keeps the namespace called name.
func NetnsPath(name string) string { return filepath.Join("/run/netns", name) }

// InNetns runs fn on an OS thread switched into the network namespace at
// nsPath, then switches the thread back (see netstackio.InNetns).
func InNetns(nsPath string, fn func() error) error { return netstackio.InNetns(nsPath, fn) }

// runIP runs `ip args...` and returns a clear error with ip's output.
func runIP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipBatch runs several ip commands in namespace ns (one `ip -batch` call).
func ipBatch(ns string, lines ...string) error {
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s -batch: %v: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// sysctls writes /proc/sys keys ("net/ipv4/ip_forward") inside namespace ns.
func sysctls(ns string, kv map[string]string) error {
	return InNetns(NetnsPath(ns), func() error {
		for k, v := range kv {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", k, v, ns, err)
			}
		}
		return nil
	})
}

// netnsExists reports whether `ip netns` knows the namespace.
func netnsExists(name string) bool {
	_, err := os.Stat(NetnsPath(name))
	return err == nil
}

// openTUN creates TUN device ifname (IFF_TUN|IFF_NO_PI, no offloads) inside
// namespace ns and returns its non-blocking fd. The device lives as long as
// the fd is open.
func openTUN(ns, ifname string) (*tunFD, error) {
	var f *tunFD
	err := InNetns(NetnsPath(ns), func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(ifname)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", ifname, err)
		}
		f = &tunFD{fd: fd, name: ns + ":" + ifname}
		return nil
	})
	return f, err
}

// DialInNetns opens a TCP connection from inside namespace ns.
func DialInNetns(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNetns(NetnsPath(ns), func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections are made from inside
// namespace ns (for a control endpoint on the namespace's loopback).
func HTTPClient(ns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialInNetns(ctx, ns, network, addr)
			},
		},
	}
}
