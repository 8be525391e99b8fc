package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sdnkvs/sdnkvs/kvs"
)

// KvsCatchupFlags name this DC and the other DCs' nodes for catch-up after
// an outage (docs/design-lifecycle.md).
type KvsCatchupFlags struct {
	DCName      string   `name:"dc-name" placeholder:"NAME" help:"This DC's name (1-16 bytes), the name the middlebox gives it in --dc."`
	Remote      []string `name:"remote" sep:"none" placeholder:"NAME=HOST:PORT[,HOST:PORT...]" help:"Another DC's nodes' PEER addresses (repeatable, one per DC): a catch-up job the middlebox starts on this node pulls from them. The DCs must share --cluster-id and --peer-secret-file; a remote DC's node may only read the catch-up stream."`
	CatchupRate string   `name:"catchup-rate" default:"64MiB" placeholder:"BYTES" help:"Bytes per second of record data a catch-up job pulls (e.g. 64MiB, 512KiB); 0 = unlimited."`
	// CatchupTarget: catchup_window.go in package kvs.
	CatchupTarget time.Duration `name:"catchup-target" default:"25ms" placeholder:"DURATION" help:"Delay a catch-up job's writes may add to live writes in this DC: the job's window of local batches shrinks (down to a pause between batches) while their latency is more than this above its floor; 0 = a fixed window of 4 batches."`
}

// apply validates the flags into c.
func (f KvsCatchupFlags) apply(c *kvs.Config) error {
	if f.DCName != "" {
		if err := checkDCName(f.DCName); err != nil {
			return fmt.Errorf("--dc-name: %w", err)
		}
	}
	if len(f.Remote) > 0 && f.DCName == "" {
		return fmt.Errorf("--remote needs --dc-name (this DC's own name)")
	}
	remotes := map[string][]string{}
	for _, r := range f.Remote {
		name, list, ok := strings.Cut(r, "=")
		if !ok || list == "" {
			return fmt.Errorf("--remote %q: want NAME=HOST:PORT[,HOST:PORT...]", r)
		}
		if err := checkDCName(name); err != nil {
			return fmt.Errorf("--remote %q: %w", r, err)
		}
		if name == f.DCName {
			return fmt.Errorf("--remote %q: %q is this DC's own --dc-name", r, name)
		}
		if _, dup := remotes[name]; dup {
			return fmt.Errorf("--remote: DC %q given twice (list all its nodes in one flag)", name)
		}
		for _, a := range strings.Split(list, ",") {
			host, port, err := net.SplitHostPort(a)
			p, perr := strconv.Atoi(port)
			if err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
				return fmt.Errorf("--remote %q: %q is not HOST:PORT", r, a)
			}
			remotes[name] = append(remotes[name], a)
		}
	}
	rate, err := parseBytes(strings.TrimSuffix(f.CatchupRate, "/s"))
	if err != nil {
		return fmt.Errorf("--catchup-rate: %w", err)
	}
	if f.CatchupTarget < 0 {
		return fmt.Errorf("--catchup-target: %v is negative", f.CatchupTarget)
	}
	c.DCName, c.CatchupRate, c.CatchupTarget = f.DCName, rate, f.CatchupTarget
	if len(remotes) > 0 {
		c.Remotes = remotes
	}
	return nil
}

func checkDCName(s string) error {
	if s == "" || len(s) > 16 {
		return fmt.Errorf("DC name %q must be 1 to 16 bytes", s)
	}
	if strings.ContainsAny(s, "\x00=,") {
		return fmt.Errorf("DC name %q holds NUL, '=' or ','", s)
	}
	return nil
}
