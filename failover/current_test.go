package failover

import "testing"

// The last-DC hold protects the last live *current* DC: a joining DC
// (SetCurrent false) may go down, and the live current one is held.
func TestHoldCountsCurrentDCs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Mode = Fast
	d, err := New[int](cfg, testTopo(1)) // sydney n0, dublin n1
	if err != nil {
		t.Fatal(err)
	}
	fail := func(n NodeID, at float64) []Decision {
		var out []Decision
		for i := range cfg.ProbeMisses + 2 {
			out = append(out, d.Probe(ms(at+float64(i)), n, ProbeResult{})...)
		}
		return out
	}
	d.SetCurrent(0, false) // sydney joining: dublin is the last current DC
	fail(1, 0)
	if !d.DCUp(1) || d.Stats().LastDCHeld == 0 {
		t.Fatalf("dublin (last current DC) went down: up=%v held=%d", d.DCUp(1), d.Stats().LastDCHeld)
	}
	fail(0, 100)
	if d.DCUp(0) {
		t.Fatalf("joining sydney was held like a current DC")
	}
	// Both current again: the one live DC is held.
	d.SetCurrent(0, true)
	held := d.Stats().LastDCHeld
	fail(1, 200)
	if !d.DCUp(1) || d.Stats().LastDCHeld == held {
		t.Fatalf("the last live DC went down")
	}
}
