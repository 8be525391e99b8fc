//go:build linux

package race

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestMain(m *testing.M) { testbedtest.Main(m) }

// newTestEnv starts a sequenced environment. The race tests pass
// --detector=none: they check the order, and a detection under a loaded
// machine's probe timeouts would take a DC out of the race.
func newTestEnv(t *testing.T, dcs []testbed.DC, mbExtra ...string) *Env {
	t.Helper()
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e, err := NewEnv(ctx, testbedtest.SharedBinary(t), dcs, true, mbExtra, testbedtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if err := e.StartMiddlebox(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

func checkAgree(t *testing.T, row Row) {
	t.Helper()
	t.Logf("W=%d: %d of %d keys differ, %d missing, %d errors, SET p50 %v p99 %v", row.Writers, row.Differ, row.Rounds, row.Missing, row.Errors, row.P50, row.P99)
	if row.Differ != 0 || row.Missing != 0 || row.Errors != 0 {
		t.Errorf("W=%d: %d keys differ between DCs, %d missing, %d SETs failed (first: %s); want 0, 0, 0; samples %v", row.Writers, row.Differ, row.Missing, row.Errors, row.FirstErr, row.Samples)
	}
}

// TestSequencedRaceDCsAgree is issue 8's race at the paper's delays:
// barrier-synchronised writers on one key per round leave both DCs with
// the same value for every key.
func TestSequencedRaceDCsAgree(t *testing.T) {
	e := newTestEnv(t, DefaultDCs(), "--detector=none")
	ctx := context.Background()
	for _, w := range []int{2, 4, 8} {
		row, err := e.Race(ctx, fmt.Sprintf("race:w%d", w), w, 15, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkAgree(t, row)
	}
	info, _ := e.DCs()
	if len(info) != 2 {
		t.Fatalf("/dcs: %+v", info)
	}
}

// TestSequencedRaceLossOnOneDC: random loss on dublin's link makes it get
// retransmissions (and resegmented copies) sydney does not; both still
// agree on every key.
func TestSequencedRaceLossOnOneDC(t *testing.T) {
	dcs := []testbed.DC{{Name: "sydney", Nodes: 3, Delay: 2 * time.Millisecond}, {Name: "dublin", Nodes: 3, Delay: 20 * time.Millisecond, Loss: 0.05}}
	e := newTestEnv(t, dcs, "--detector=none")
	row, err := e.Race(context.Background(), "race:loss", 4, 40, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkAgree(t, row)
	var lost uint64
	for _, l := range e.TB.Links() {
		if l.DC == "dublin" && l.ToDC != nil {
			lost = l.ToDC.DropLoss
		}
	}
	if lost == 0 {
		t.Fatal("no packet lost on dublin's link: the test did not exercise retransmissions")
	}
	t.Logf("%d packets lost towards dublin", lost)
}

// TestMiddleboxRestartMidRace: the middlebox is restarted between two
// rounds of a race on the same state file; its first position is above
// every position it handed out before, the nodes take the new epoch, and
// the DCs agree on every key.
func TestMiddleboxRestartMidRace(t *testing.T) {
	dcs := []testbed.DC{{Name: "sydney", Nodes: 3, Delay: 2 * time.Millisecond}, {Name: "dublin", Nodes: 3, Delay: 20 * time.Millisecond}}
	e := newTestEnv(t, dcs, "--detector=none")
	ctx := context.Background()
	restarted := false
	hook := func(r int) (bool, error) {
		if r != 14 {
			return false, nil
		}
		before, err := e.LastG()
		if err != nil {
			return false, err
		}
		e.StopMiddlebox()
		if err := e.StartMiddlebox(ctx); err != nil {
			return false, err
		}
		after, err := e.LastG()
		if err != nil {
			return false, err
		}
		if after <= before {
			t.Errorf("restarted sequencer starts at %d, not above %d", after, before)
		}
		t.Logf("sequencer G before restart %d, after %d", before, after)
		restarted = true
		return true, nil
	}
	row, err := e.Race(ctx, "race:restart", 4, 30, hook)
	if err != nil {
		t.Fatal(err)
	}
	if !restarted {
		t.Fatal("middlebox not restarted")
	}
	checkAgree(t, row)
}
