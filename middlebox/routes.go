package middlebox

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// RouteConfig says which gateway routes InstallRoutes sets up.
//
// The equivalent commands, for operators who manage routes themselves
// (TUN sdn0, VIP 10.200.100.1, table 100, nodes 10.210.1.11:6379 and
// 10.210.2.11:6379):
//
//	sysctl -w net.ipv4.ip_forward=1
//	sysctl -w net.ipv4.conf.all.rp_filter=0
//	sysctl -w net.ipv4.conf.default.rp_filter=0
//	sysctl -w net.ipv4.conf.sdn0.rp_filter=0
//	ip route add 10.200.100.1/32 dev sdn0
//	ip route add default dev sdn0 table 100
//	ip rule add iif veth-dc1 from 10.210.1.11 ipproto tcp sport 6379 lookup 100
//	ip rule add iif veth-dc2 from 10.210.2.11 ipproto tcp sport 6379 lookup 100
//
// The first route sends client traffic for the VIP into the middlebox; the
// rules send the nodes' replies (and nothing else from them) into it too,
// only as they arrive from the DC-facing interface (iif: the interface of
// the route to the node, or RouteConfig.DCIface), so replies forged on the
// client side are never taken for the nodes' (the middlebox also drops,
// and counts, packets to the VIP from a node's address).
// Packets the middlebox writes back are routed by the main table. Undo
// with the same commands, `del` for `add`. Also keep conntrack/NAT rules
// out of the gateway's path (docs/design.md section 9).
type RouteConfig struct {
	Netns string // named network namespace to configure ("" = the current one)
	TUN   string
	VIP   netip.Addr
	Nodes []netip.AddrPort
	Table int // policy routing table for node replies
	// DCIface is the interface node replies arrive on ("": for each node,
	// the interface of the gateway's route to it).
	DCIface string
}

// InstallRoutes applies rc (sysctls, VIP route, reply table, one policy
// rule per node) with `ip` and returns a function that removes what it
// added and restores the sysctls it changed. On error, what was added is
// removed again.
func InstallRoutes(rc RouteConfig) (undo func() error, err error) {
	if rc.TUN == "" || !rc.VIP.IsValid() || rc.Table <= 0 || rc.Table >= 1<<31 {
		return nil, fmt.Errorf("middlebox: route config needs a TUN, a VIP and a table in 1..2^31-1")
	}
	var undos []func() error
	undo = func() error {
		var errs []error
		for i := len(undos) - 1; i >= 0; i-- {
			if err := undos[i](); err != nil {
				errs = append(errs, err)
			}
		}
		undos = nil
		return errors.Join(errs...)
	}
	fail := func(err error) (func() error, error) {
		undo()
		return nil, err
	}
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", "net.ipv4.conf." + rc.TUN + ".rp_filter"} {
		want := "0"
		if k == "net.ipv4.ip_forward" {
			want = "1"
		}
		old, err := rc.sysctl(k, "")
		if err != nil {
			return fail(err)
		}
		if old == want {
			continue
		}
		if _, err := rc.sysctl(k, want); err != nil {
			return fail(err)
		}
		undos = append(undos, func() error { _, err := rc.sysctl(k, old); return err })
	}
	vip := rc.VIP.Unmap().String() + "/32"
	table := strconv.Itoa(rc.Table)
	add := func(args ...string) error {
		if err := rc.ip(append([]string{}, args...)...); err != nil {
			return err
		}
		del := append([]string{}, args...)
		for i, a := range del {
			if a == "add" {
				del[i] = "del"
				break
			}
		}
		undos = append(undos, func() error { return rc.ip(del...) })
		return nil
	}
	if err := add("route", "add", vip, "dev", rc.TUN); err != nil {
		return fail(err)
	}
	if err := add("route", "add", "default", "dev", rc.TUN, "table", table); err != nil {
		return fail(err)
	}
	seen := map[netip.AddrPort]bool{}
	for _, n := range rc.Nodes {
		if seen[n] {
			continue
		}
		seen[n] = true
		iif := rc.DCIface
		if iif == "" {
			if iif, err = rc.routeDev(n.Addr().Unmap()); err != nil {
				return fail(err)
			}
		}
		if err := add("rule", "add", "iif", iif, "from", n.Addr().Unmap().String(), "ipproto", "tcp", "sport", strconv.Itoa(int(n.Port())), "lookup", table); err != nil {
			return fail(err)
		}
	}
	return undo, nil
}

// routeDev returns the interface of the route to a ("ip route get").
func (rc RouteConfig) routeDev(a netip.Addr) (string, error) {
	args := []string{"route", "get", a.String()}
	if rc.Netns != "" {
		args = append([]string{"-n", rc.Netns}, args...)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("middlebox: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			if f[i+1] == rc.TUN {
				break // the route to the node is the TUN: no DC-facing interface
			}
			return f[i+1], nil
		}
	}
	return "", fmt.Errorf("middlebox: no DC-facing interface for node %s (ip route get: %s); set the DC interface", a, strings.TrimSpace(string(out)))
}

func (rc RouteConfig) ip(args ...string) error {
	if rc.Netns != "" {
		args = append([]string{"-n", rc.Netns}, args...)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("middlebox: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sysctl reads key (value "") or sets it, returning the old value.
func (rc RouteConfig) sysctl(key, value string) (string, error) {
	if rc.Netns != "" {
		args := []string{"netns", "exec", rc.Netns, "sysctl", "-n", key}
		if value != "" {
			args = []string{"netns", "exec", rc.Netns, "sysctl", "-w", key + "=" + value}
		}
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("middlebox: sysctl %s in %s: %v: %s", key, rc.Netns, err, strings.TrimSpace(string(out)))
		}
		return strings.TrimSpace(string(out)), nil
	}
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if value == "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("middlebox: sysctl %s: %w", key, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return "", fmt.Errorf("middlebox: sysctl %s=%s: %w", key, value, err)
	}
	return value, nil
}
