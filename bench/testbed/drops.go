//go:build linux

package testbed

import (
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
)

// DropCounts break down the packets dropped on a testbed's paths.
type DropCounts struct {
	Queue int64 // the WAN emulator's queue was full (drop-tail), both ways
	Loss  int64 // the WAN emulator's random loss, both ways
	Link  int64 // DC link interfaces' transmit drops (a TUN whose reader fell behind)
	TUN   int64 // on the way into the middlebox's TUN
	// QueueBy splits Queue by link direction: "<dc> in" (towards the DC)
	// and "<dc> out" (from it); nil when no link has an emulator.
	QueueBy map[string]int64
}

// Total is the sum of all the counts.
func (d DropCounts) Total() int64 { return d.Queue + d.Loss + d.Link + d.TUN }

func (d DropCounts) String() string {
	q := ""
	if d.Queue > 0 && len(d.QueueBy) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(d.QueueBy)) {
			if n := d.QueueBy[k]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, n))
			}
		}
		q = " (" + strings.Join(parts, ", ") + ")"
	}
	return fmt.Sprintf("emulator queue %d%s, random loss %d, link interfaces %d, middlebox TUN %d", d.Queue, q, d.Loss, d.Link, d.TUN)
}

// Sub returns d minus an earlier reading.
func (d DropCounts) Sub(before DropCounts) DropCounts {
	out := DropCounts{Queue: d.Queue - before.Queue, Loss: d.Loss - before.Loss, Link: d.Link - before.Link, TUN: d.TUN - before.TUN}
	if d.QueueBy != nil {
		out.QueueBy = map[string]int64{}
		for k, n := range d.QueueBy {
			out.QueueBy[k] = n - before.QueueBy[k]
		}
	}
	return out
}

// Drops counts the packets dropped so far on tb's DC links and on the
// middlebox's TUN; ok is false when a DC link's counters cannot be read.
func (tb *Testbed) Drops() (d DropCounts, ok bool) {
	for _, l := range tb.Links() {
		if l.ToDC != nil {
			if d.QueueBy == nil {
				d.QueueBy = map[string]int64{}
			}
			d.QueueBy[l.DC+" in"] += int64(l.ToDC.DropQueue)
			d.QueueBy[l.DC+" out"] += int64(l.FromDC.DropQueue)
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
