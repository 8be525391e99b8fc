//go:build linux

package demo

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// The lifecycle scenario, short: cut the near DC under forked writes and
// anycast reads, heal it, wait until it has caught up and is live, cut the
// far DC. Every acknowledged write is in the survivor after each disaster
// (RPO 0 over both), the near DC rejoined, no read after the rejoin was
// stale, and the report files are written.
func TestLifecycleScenario(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := shortConfig(t)
	cfg.Scenario = ScenarioLifecycle
	cfg.CutAt = 2 * time.Second
	cfg.Lifecycle = LifecycleConfig{Cycles: 2, Outage: 3 * time.Second, Steady: time.Second, Tail: 2 * time.Second,
		RejoinTimeout: 90 * time.Second}
	cfg.MiddleboxArgs = []string{"--rejoin-reset-after=2s"}
	cfg.Out = t.TempDir()
	res, err := RunLifecycle(context.Background(), cfg)
	if res != nil {
		res.Print(cfg.Log)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Disasters) != 2 || res.Rejoins != 1 {
		t.Fatalf("%d disasters, %d rejoins: want 2 and 1", len(res.Disasters), res.Rejoins)
	}
	for _, d := range res.Disasters {
		if d.Checked == 0 || d.Lost != 0 {
			t.Errorf("disaster %d (%s cut): %s lacks %d of %d acknowledged writes", d.N, d.DC, d.Survivor, d.Lost, d.Checked)
		}
	}
	if res.RPOLost != 0 || res.FinalLost != 0 {
		t.Errorf("RPO: %d lost over the checks, %d in the final check of %s", res.RPOLost, res.FinalLost, res.FinalDC)
	}
	if res.StaleAfterRejoin != 0 {
		t.Errorf("%d reads after the rejoin returned an older value than one acknowledged before they began", res.StaleAfterRejoin)
	}
	if res.ReadsByDC[res.Near] == 0 || res.ReadsByDC[res.Far] == 0 {
		t.Errorf("reads by DC %v: want both DCs to have served reads", res.ReadsByDC)
	}
	if len(res.Files) != 3 {
		t.Errorf("files %v: want two CSVs and a PNG", res.Files)
	}
	for _, f := range res.Files {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}
