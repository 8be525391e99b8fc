//go:build linux

package race

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/sdnkvs/sdnkvs/bench/scenario/lintest"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// TestSequencedLinearizableAcrossNearCut: forked SETs and anycast GETs on
// two contended keys through the VIP, across a cut of the near DC (the
// detector moves reads and drops the forked branches): the history is
// linearizable, so reads from the far DC never go back to a value older
// than one readers saw from the near DC. Writers pause a second before the
// cut (readers read the last writes' values from the near DC) until readers
// have read from the far DC (so its values for those writes are observed
// before new writes cover them), then go on.
func TestSequencedLinearizableAcrossNearCut(t *testing.T) {
	dcs := []testbed.DC{{Name: "sydney", Nodes: 3, Delay: 2 * time.Millisecond}, {Name: "dublin", Nodes: 3, Delay: 20 * time.Millisecond}}
	e := newTestEnv(t, dcs)
	ctx := context.Background()
	h := lintest.NewHistory(0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { lintest.Client(ctx, e.Env, h, i, i < 6, 2, stop) })
	}
	time.Sleep(3 * time.Second) // load before the cut (a duration of the experiment, not a wait for a condition)
	h.Paused.Store(true)
	time.Sleep(time.Second) // readers read the last writes' values from sydney
	if err := e.TB.Cut("sydney"); err != nil {
		t.Fatal(err)
	}
	h.Phase.Store(1)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.WaitDCLive(wctx, "sydney", false); err != nil {
		t.Fatalf("sydney never declared down: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for h.Done[1].Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	h.Paused.Store(false)
	for h.SetsDone[1].Load() < 50 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if h.Done[1].Load() < 200 || h.SetsDone[1].Load() < 50 {
		t.Fatalf("only %d operations (%d SETs) completed after the cut", h.Done[1].Load(), h.SetsDone[1].Load())
	}
	res, path := lintest.Check(h, 120*time.Second)
	t.Logf("%d operations: %d SETs ok, %d GETs ok, %d SETs unknown, %d GETs failed, %d after the cut; linearizable: %v",
		len(h.Ops()), h.OKSets.Load(), h.OKGets.Load(), h.Unknown.Load(), h.FailGets.Load(), h.Done[1].Load(), res)
	if res != porcupine.Ok {
		t.Fatalf("history through the VIP is not linearizable (%v); visualization in %s", res, path)
	}
}
