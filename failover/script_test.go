package failover

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// The rule tests are scripts, one command per line, run against a
// Detector with a fake clock. Every line asserts the decisions it
// produces: "-> NodeDown n0 duplicates, DCDown sydney nodes" lists them,
// no arrow means none.
//
//	at <ms> client <flow> n<id> seq=<n> [len=<n>] [flags=SFR] [cli=<ip>]
//	at <ms> server <flow> n<id> [ack=<n>] [flags=R]
//	at <ms> end <flow>
//	at <ms> lag <flow> n<id> since=<ms>|none
//	at <ms> probe n<id> ok|fail|notready [rtt=<ms>]
//	at <ms> tick
//	check up|down n<id> | dcup|dcdown <dc> | preferred <dc>|none
//	check dups n<id> <n> | misses n<id> <n> | live <dc> <n>
//
// Lines starting with # are comments.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Millisecond))) }

// testTopo is two DCs of three nodes: sydney n0-n2, dublin n3-n5.
func testTopo(perDC int) []DC {
	var topo []DC
	for i, name := range []string{"sydney", "dublin"} {
		dc := DC{Name: name}
		for j := 0; j < perDC; j++ {
			dc.Nodes = append(dc.Nodes, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i + 1), byte(j + 1)}), 6379))
		}
		topo = append(topo, dc)
	}
	return topo
}

func renderDecisions[K comparable](d *Detector[K], ds []Decision) string {
	var parts []string
	for _, dec := range ds {
		var subj string
		switch dec.Kind {
		case NodeDown, NodeUp:
			subj = fmt.Sprintf("n%d", dec.Node)
		default:
			s, _ := d.DCState(dec.DC)
			subj = s.Name
		}
		parts = append(parts, fmt.Sprintf("%v %s %v", dec.Kind, subj, dec.Signal))
	}
	return strings.Join(parts, ", ")
}

func parseNode(t *testing.T, lineNo int, s string) NodeID {
	t.Helper()
	if !strings.HasPrefix(s, "n") {
		t.Fatalf("line %d: want n<id>, got %q", lineNo, s)
	}
	n, err := strconv.Atoi(s[1:])
	if err != nil {
		t.Fatalf("line %d: %v", lineNo, err)
	}
	return NodeID(n)
}

func kv(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			m[k] = v
		} else {
			m[a] = ""
		}
	}
	return m
}

func atoi(t *testing.T, lineNo int, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("line %d: %v", lineNo, err)
	}
	return n
}

func flags(s string) header.TCPFlags {
	var f header.TCPFlags
	for _, c := range s {
		switch c {
		case 'S':
			f |= header.TCPFlagSyn
		case 'F':
			f |= header.TCPFlagFin
		case 'R':
			f |= header.TCPFlagRst
		case 'A':
			f |= header.TCPFlagAck
		}
	}
	return f
}

// runScript runs script against d, failing t on the first line whose
// decisions or check differ.
func runScript(t *testing.T, d *Detector[string], script string) {
	t.Helper()
	for i, raw := range strings.Split(script, "\n") {
		lineNo := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		want := ""
		if cmd, exp, ok := strings.Cut(line, "->"); ok {
			line, want = strings.TrimSpace(cmd), strings.TrimSpace(exp)
		}
		f := strings.Fields(line)
		if f[0] == "check" {
			runCheck(t, d, lineNo, f[1:])
			continue
		}
		if f[0] != "at" || len(f) < 3 {
			t.Fatalf("line %d: bad command %q", lineNo, line)
		}
		msv, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("line %d: %v", lineNo, err)
		}
		now := ms(msv)
		var got []Decision
		switch f[2] {
		case "client":
			a := kv(f[5:])
			seg := Segment{Seq: seqnum.Value(atoi(t, lineNo, a["seq"])), Flags: flags(a["flags"]) | header.TCPFlagAck}
			if l, ok := a["len"]; ok {
				seg.Len = atoi(t, lineNo, l)
			}
			if c, ok := a["cli"]; ok {
				seg.Client = netip.MustParseAddr(c)
			}
			got = d.ClientSegment(now, f[3], parseNode(t, lineNo, f[4]), seg)
		case "server":
			a := kv(f[5:])
			seg := Segment{Flags: flags(a["flags"])}
			if ack, ok := a["ack"]; ok {
				seg.Ack = seqnum.Value(atoi(t, lineNo, ack))
				seg.Flags |= header.TCPFlagAck
			}
			got = d.ServerSegment(now, f[3], parseNode(t, lineNo, f[4]), seg)
		case "end":
			d.FlowEnded(f[3])
		case "lag":
			a := kv(f[5:])
			var since time.Time
			if a["since"] != "none" {
				since = ms(float64(atoi(t, lineNo, a["since"])))
			}
			got = d.BranchLag(now, f[3], parseNode(t, lineNo, f[4]), since)
		case "probe":
			a := kv(f[4:])
			var r ProbeResult
			switch {
			case hasKey(a, "ok"):
				r = ProbeResult{OK: true, Ready: true}
			case hasKey(a, "notready"):
				r = ProbeResult{OK: true}
			case hasKey(a, "fail"):
			default:
				t.Fatalf("line %d: probe wants ok|fail|notready", lineNo)
			}
			if v, ok := a["rtt"]; ok {
				r.RTT = time.Duration(atoi(t, lineNo, v)) * time.Millisecond
			}
			got = d.Probe(now, parseNode(t, lineNo, f[3]), r)
		case "tick":
			got = d.Tick(now)
		default:
			t.Fatalf("line %d: unknown command %q", lineNo, f[2])
		}
		if s := renderDecisions(d, got); s != want {
			t.Fatalf("line %d: %s\n got: %q\nwant: %q", lineNo, line, s, want)
		}
		for _, dec := range got {
			if dec.Cause == "" {
				t.Fatalf("line %d: decision %+v has no cause", lineNo, dec)
			}
		}
	}
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

func runCheck(t *testing.T, d *Detector[string], lineNo int, f []string) {
	t.Helper()
	dcID := func(name string) DCID {
		id, ok := d.DCByName(name)
		if !ok {
			t.Fatalf("line %d: no DC %q", lineNo, name)
		}
		return id
	}
	switch f[0] {
	case "up", "down":
		if up := d.NodeUp(parseNode(t, lineNo, f[1])); up != (f[0] == "up") {
			t.Fatalf("line %d: check %s %s: node up = %v", lineNo, f[0], f[1], up)
		}
	case "dcup", "dcdown":
		if up := d.DCUp(dcID(f[1])); up != (f[0] == "dcup") {
			t.Fatalf("line %d: check %s %s: DC up = %v", lineNo, f[0], f[1], up)
		}
	case "preferred":
		dc, ok := d.PreferredDC()
		got := "none"
		if ok {
			s, _ := d.DCState(dc)
			got = s.Name
		}
		if got != f[1] {
			t.Fatalf("line %d: preferred DC = %s, want %s", lineNo, got, f[1])
		}
	case "dups", "misses":
		s, _ := d.NodeState(parseNode(t, lineNo, f[1]))
		got := s.Dups
		if f[0] == "misses" {
			got = s.Misses
		}
		if want := atoi(t, lineNo, f[2]); got != want {
			t.Fatalf("line %d: %s of %s = %d, want %d", lineNo, f[0], f[1], got, want)
		}
	case "live":
		live := d.LiveNodes(dcID(f[1]), nil)
		if want := atoi(t, lineNo, f[2]); len(live) != want {
			t.Fatalf("line %d: live nodes of %s = %v, want %d", lineNo, f[1], live, want)
		}
	default:
		t.Fatalf("line %d: unknown check %q", lineNo, f[0])
	}
}
