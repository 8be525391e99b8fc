//go:build linux

package testbed

import (
	"encoding/json"
	"fmt"
	"os/exec"
)

// DropCounts break down the packets dropped on a testbed's paths.
type DropCounts struct {
	Queue int64 // the WAN emulator's queue was full (drop-tail), both ways
	Loss  int64 // the WAN emulator's random loss, both ways
	Link  int64 // DC link interfaces' transmit drops (a TUN whose reader fell behind)
	TUN   int64 // on the way into the middlebox's TUN
}

// Total is the sum of all the counts.
func (d DropCounts) Total() int64 { return d.Queue + d.Loss + d.Link + d.TUN }

func (d DropCounts) String() string {
	return fmt.Sprintf("emulator queue %d, random loss %d, link interfaces %d, middlebox TUN %d", d.Queue, d.Loss, d.Link, d.TUN)
}

// Sub returns d minus an earlier reading.
func (d DropCounts) Sub(before DropCounts) DropCounts {
	return DropCounts{Queue: d.Queue - before.Queue, Loss: d.Loss - before.Loss, Link: d.Link - before.Link, TUN: d.TUN - before.TUN}
}

// Drops counts the packets dropped so far on tb's DC links and on the
// middlebox's TUN; ok is false when a DC link's counters cannot be read.
func (tb *Testbed) Drops() (d DropCounts, ok bool) {
	for _, l := range tb.Links() {
		if l.ToDC != nil {
			d.Queue += int64(l.ToDC.DropQueue + l.FromDC.DropQueue)
			d.Loss += int64(l.ToDC.DropLoss + l.FromDC.DropLoss)
		}
		for _, x := range []struct{ role, ifn string }{{"gw", l.GwIf}, {l.DC, l.DCIf}} {
			n, err := txDropped(tb.NS(x.role), x.ifn)
			if err != nil {
				return d, false
			}
			d.Link += n
		}
	}
	if n, err := txDropped(tb.NS("gw"), "sdn0"); err == nil { // absent before the middlebox starts
		d.TUN += n
	}
	return d, true
}

// txDropped reads an interface's transmit drop counter in namespace ns.
func txDropped(ns, ifn string) (int64, error) {
	out, err := exec.Command("ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifn).Output()
	if err != nil {
		return 0, err
	}
	var st []struct {
		Stats64 struct {
			TX struct {
				Dropped int64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &st); err != nil || len(st) != 1 {
		return 0, fmt.Errorf("ip -s -j link show %s in %s: unexpected output", ifn, ns)
	}
	return st[0].Stats64.TX.Dropped, nil
}
