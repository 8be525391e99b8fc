package failover

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/script"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// The rule tests are data-driven scripts (testdata/*.txt, run by
// internal/script; -rewrite regenerates the output), run against a
// Detector with a fake clock. Each command prints what it produced: the
// decisions of an event ("NodeDown n0 duplicates", one a line), or the
// state asked for.
//
//	detector mode=safe|fast|paper perdc=<k> [dcs=2|3] [startdown]
//	at <ms> client <flow> n<id> seq=<n> [len=<n>] [flags=SFR] [cli=<ip>]
//	at <ms> server <flow> n<id> [ack=<n>] [flags=R]
//	at <ms> end <flow>
//	at <ms> lag <flow> n<id> since=<ms>|none
//	at <ms> probe n<id> ok|fail|notready [rtt=<ms>]
//	at <ms> tick
//	node n<id> | dc <dc> | preferred | dups n<id> | misses n<id> | live <dc>

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Millisecond))) }

// testTopo is two DCs of three nodes: sydney n0-n2, dublin n3-n5.
func testTopo(perDC int) []DC { return testTopoN(perDC, 2) }

// testTopoN is testTopo with dcs DCs (sydney, dublin, tokyo).
func testTopoN(perDC, dcs int) []DC {
	var topo []DC
	for i, name := range []string{"sydney", "dublin", "tokyo"}[:dcs] {
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

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

// step runs one "at <ms> <event> ..." line (f is its words) against d and
// returns the decisions it produced.
func step(t *testing.T, d *Detector[string], lineNo int, f []string) []Decision {
	t.Helper()
	if len(f) < 3 {
		t.Fatalf("line %d: bad command %q", lineNo, strings.Join(f, " "))
	}
	msv, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		t.Fatalf("line %d: %v", lineNo, err)
	}
	now := ms(msv)
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
		return d.ClientSegment(now, f[3], parseNode(t, lineNo, f[4]), seg)
	case "server":
		a := kv(f[5:])
		seg := Segment{Flags: flags(a["flags"])}
		if ack, ok := a["ack"]; ok {
			seg.Ack = seqnum.Value(atoi(t, lineNo, ack))
			seg.Flags |= header.TCPFlagAck
		}
		if v, ok := a["seq"]; ok {
			seg.Seq = seqnum.Value(atoi(t, lineNo, v))
		}
		if v, ok := a["len"]; ok {
			seg.Len = atoi(t, lineNo, v)
		}
		return d.ServerSegment(now, f[3], parseNode(t, lineNo, f[4]), seg)
	case "end":
		d.FlowEnded(f[3])
		return nil
	case "lag":
		a := kv(f[5:])
		var since time.Time
		if a["since"] != "none" {
			since = ms(float64(atoi(t, lineNo, a["since"])))
		}
		return d.BranchLag(now, f[3], parseNode(t, lineNo, f[4]), since)
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
		return d.Probe(now, parseNode(t, lineNo, f[3]), r)
	case "tick":
		return d.Tick(now)
	}
	t.Fatalf("line %d: unknown event %q", lineNo, f[2])
	return nil
}

// runRule runs one command of a rule script (testdata/*.txt, see
// TestRules) against *dp, creating the detector on "detector", and
// returns its output lines: the decisions taken, or the state asked for.
func runRule(c *script.Cmd, dp **Detector[string]) []string {
	t := c.T.(*testing.T)
	t.Helper()
	if c.Name == "detector" {
		cfg := DefaultConfig()
		mode, err := ParseMode(c.Args["mode"])
		if err != nil {
			c.Fatalf("%v", err)
		}
		cfg.Mode, cfg.StartDown = mode, c.Has("startdown")
		d, err := New[string](cfg, testTopoN(c.Int("perdc", 1), c.Int("dcs", 2)))
		if err != nil {
			c.Fatalf("%v", err)
		}
		*dp = d
		return nil
	}
	d := *dp
	if d == nil {
		c.Fatalf("no detector yet")
	}
	defer checkInvariants(t, d)
	dcID := func(name string) DCID {
		id, ok := d.DCByName(name)
		if !ok {
			c.Fatalf("no DC %q", name)
		}
		return id
	}
	arg := func() string {
		if len(c.Pos) == 0 {
			c.Fatalf("missing argument")
		}
		return c.Pos[0]
	}
	updown := func(up bool) []string {
		if up {
			return []string{"up"}
		}
		return []string{"down"}
	}
	switch c.Name {
	case "at":
		var out []string
		for _, dec := range step(t, d, c.Line, strings.Fields(c.Text)) {
			if dec.Cause == "" {
				c.Fatalf("decision %+v has no cause", dec)
			}
			out = append(out, renderDecisions(d, []Decision{dec}))
		}
		return out
	case "node":
		return updown(d.NodeUp(parseNode(t, c.Line, arg())))
	case "dc":
		return updown(d.DCUp(dcID(arg())))
	case "preferred":
		dc, ok := d.PreferredDC()
		if !ok {
			return []string{"none"}
		}
		s, _ := d.DCState(dc)
		return []string{s.Name}
	case "dups", "misses":
		s, _ := d.NodeState(parseNode(t, c.Line, arg()))
		if c.Name == "misses" {
			return []string{strconv.Itoa(s.Misses)}
		}
		return []string{strconv.Itoa(s.Dups)}
	case "live":
		return []string{strconv.Itoa(len(d.LiveNodes(dcID(arg()), nil)))}
	}
	c.Fatalf("unknown command")
	return nil
}
