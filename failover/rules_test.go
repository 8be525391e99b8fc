package failover

import (
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/script"
)

// TestRules runs the rule scripts in testdata: one scenario per rule (and
// per sentence of the paper's section 3.3), each starting with a
// "detector" command; the invariants are checked after every command.
func TestRules(t *testing.T) {
	script.RunDir(t, "testdata/*.txt", func() func(*script.Cmd) []string {
		var d *Detector[string]
		return func(c *script.Cmd) []string { return runRule(c, &d) }
	})
}

// checkInvariants: a DC is up iff it has a live node; the DC's live count
// matches its nodes; the transitions alternate per node and per DC.
func checkInvariants[K comparable](t testing.TB, d *Detector[K]) {
	t.Helper()
	for dc := DCID(0); int(dc) < d.NumDCs(); dc++ {
		live := d.LiveNodes(dc, nil)
		s, _ := d.DCState(dc)
		if s.Up != (len(live) > 0) || s.Live != len(live) || d.DCUp(dc) != s.Up {
			t.Fatalf("DC %s: up=%v live=%d but live nodes %v", s.Name, s.Up, s.Live, live)
		}
	}
	if d.cfg.History == 0 {
		return
	}
	last := map[[2]int]Kind{}
	for _, tr := range d.Transitions() {
		key := [2]int{int(tr.Node), int(tr.DC)}
		if tr.Kind == DCDown || tr.Kind == DCUp {
			key[0] = -1
		}
		if prev, ok := last[key]; ok && prev == tr.Kind {
			t.Fatalf("transition %v twice in a row for %v: %+v", tr.Kind, key, d.Transitions())
		}
		last[key] = tr.Kind
	}
}

// TestPaperRecoveryTime reproduces the paper's claim: with the threshold
// at 5 and TCP's exponential RTO backoff, the redirection happens 15-25 s
// after the cut (section 4.1). With an initial RTO r, the 5th
// retransmission leaves at r*(1+2+4+8+16) = 31r: r = 0.5-0.8 s (an RTT
// near 100 ms with the variance of a full pipe) gives 15.5-24.8 s.
func TestPaperRecoveryTime(t *testing.T) {
	for _, rto := range []time.Duration{500 * time.Millisecond, 650 * time.Millisecond, 800 * time.Millisecond} {
		d, err := New[int](Config{Mode: Paper}, testTopo(1))
		if err != nil {
			t.Fatal(err)
		}
		seg := Segment{Seq: 1000, Len: 1448}
		d.ClientSegment(t0, 1, 0, seg) // sent just before the cut
		at, r := t0, rto
		var detected time.Duration
		for i := 0; i < 10 && detected == 0; i++ {
			at = at.Add(r)
			r *= 2
			for _, dec := range d.ClientSegment(at, 1, 0, seg) {
				if dec.Kind == NodeDown {
					detected = at.Sub(t0)
				}
			}
		}
		if detected < 15*time.Second || detected > 25*time.Second {
			t.Errorf("RTO %v: detected after %v, the paper reports 15-25 s", rto, detected)
		}
		if want := 31 * rto; detected != want {
			t.Errorf("RTO %v: detected after %v, want 31*RTO = %v", rto, detected, want)
		}
	}
}
