//go:build linux

package testbed

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
)

// FormatRate renders bits/s as tc does ("100mbit"); 0 is "unlimited".
func FormatRate(bps uint64) string {
	switch {
	case bps == 0:
		return "unlimited"
	case bps%1e9 == 0:
		return fmt.Sprintf("%dgbit", bps/1e9)
	case bps%1e6 == 0:
		return fmt.Sprintf("%dmbit", bps/1e6)
	case bps%1e3 == 0:
		return fmt.Sprintf("%dkbit", bps/1e3)
	}
	return fmt.Sprintf("%dbit", bps)
}

// WriteStatus prints a testbed's namespaces and links (with counters for
// emulated links) in human-readable form.
func WriteStatus(w io.Writer, st *State, links []LinkStatus) error {
	fmt.Fprintf(w, "testbed %s  supervisor pid %d  up since %s\n", st.Name, st.PID, st.Started.Local().Format(time.DateTime))
	roles := make([]string, 0, len(st.Namespaces))
	for r := range st.Namespaces {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	fmt.Fprintf(w, "namespaces:")
	for _, r := range roles {
		fmt.Fprintf(w, " %s=%s", r, st.Namespaces[r])
	}
	fmt.Fprintf(w, "\nclient %s -> gw %s; VIP %s (owned by the middlebox in %s)\n", ClientAddr, GatewayClientAddr, VIP, st.Namespaces["gw"])
	t := report.NewTable("#", "dc", "link", "delay", "rate", "loss", "queue", "state", "nodes", "pkts to/from", "drops q/loss/cut")
	for _, l := range links {
		state := "up"
		if l.Cut {
			state = "CUT"
		}
		nodes := fmt.Sprintf("%s..%s (%d)", l.Nodes[0], l.Nodes[len(l.Nodes)-1], len(l.Nodes))
		if len(l.Nodes) == 1 {
			nodes = l.Nodes[0]
		}
		pk, dr := "-", "-"
		if l.ToDC != nil {
			pk = fmt.Sprintf("%d/%d", l.ToDC.Packets, l.FromDC.Packets)
			dr = fmt.Sprintf("%d/%d/%d", l.ToDC.DropQueue+l.FromDC.DropQueue, l.ToDC.DropLoss+l.FromDC.DropLoss, l.ToDC.DropCut+l.FromDC.DropCut)
		}
		queue := "-"
		if l.Kind == "tun" {
			queue = fmt.Sprintf("%dB", l.Queue)
		}
		t.Add(l.Index, l.DC, l.Kind+" "+l.GwIf+"<->"+l.DCIf, l.Delay.String(), FormatRate(l.Rate),
			strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.4f", l.Loss), "0"), "."), queue, state, nodes, pk, dr)
	}
	return t.Fprint(w)
}
