package failoverbench

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

var (
	binOnce sync.Once
	binPath string
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func sdnkvsBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "sdnkvs-fobench-test-")
		if binErr == nil {
			binPath, binErr = testbed.BuildBinary(binDir)
		}
	})
	if binErr != nil {
		if testenv.InCI() {
			t.Fatal(binErr)
		}
		t.Skipf("skipping: %v", binErr)
	}
	return binPath
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) { l.t.Logf("%s", b); return len(b), nil }

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Bin: "/x"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Detectors) != 2 || c.Detectors[0] != "paper" || c.Detectors[1] != "fast" || c.Nodes != 9 || c.FarDelay != 170*time.Millisecond {
		t.Errorf("defaults: %+v", c)
	}
	for name, bad := range map[string]Config{
		"no binary": {},
		"detector":  {Bin: "/x", Detectors: []string{"psychic"}},
		"cut late":  {Bin: "/x", CutAt: time.Minute, Duration: time.Second},
		"cuts":      {Bin: "/x", Cuts: -1},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if m := median([]time.Duration{5, 1, 3}); m != 3 {
		t.Errorf("median = %v, want 3", m)
	}
}

// A short Fig. 6 run with the fast detector and two cuts under write load:
// the anycast reader resumes on the far DC, forked writes resume without a
// reset after each cut, and no acknowledged write is lost.
func TestFastFailoverAndCuts(t *testing.T) {
	testenv.RequireRoot(t)
	out := t.TempDir()
	res, err := Run(context.Background(), Config{
		Bin: sdnkvsBinary(t), Nodes: 3, NearDelay: 2 * time.Millisecond, FarDelay: 30 * time.Millisecond,
		Detectors: []string{"fast"}, CutAt: 2 * time.Second, Duration: 20 * time.Second, Until: time.Second,
		Cuts: 2, CutsRate: 300, DataDir: t.TempDir(), Out: out, Log: testLog{t}, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Print(testLog{t})
	if len(res.Runs) != 1 {
		t.Fatalf("%d detector runs, want 1", len(res.Runs))
	}
	r := res.Runs[0]
	if r.RTO < 0 {
		t.Errorf("no reply from the far DC after the cut")
	}
	var near, far int
	for _, s := range r.Samples {
		switch {
		case s.Done < r.CutAt && s.DC == "sydney":
			near++
		case s.Sent >= r.CutAt && s.DC == "dublin":
			far++
		}
	}
	if near == 0 || far == 0 {
		t.Errorf("replies from sydney before the cut %d, from dublin after %d: want both > 0", near, far)
	}
	if len(res.Cuts) != 2 {
		t.Fatalf("%d cuts recorded, want 2", len(res.Cuts))
	}
	for _, c := range res.Cuts {
		if c.RTOWrite < 0 || c.WriteResets != 0 || c.Readmitted < 0 {
			t.Errorf("cut %d: writes resumed after %v, %d write resets, readmitted after %v", c.N, c.RTOWrite, c.WriteResets, c.Readmitted)
		}
	}
	if res.AckedWrites == 0 || res.RPOLost != 0 {
		t.Errorf("RPO: %d lost of %d acknowledged, want 0 of > 0", res.RPOLost, res.AckedWrites)
	}
	for _, f := range []string{"failover-rtt.csv", "failover-throughput.csv", "failover-summary.csv", "failover-rtt.png", "failover-throughput.png", "failover-cuts.csv"} {
		if st, err := os.Stat(out + "/" + f); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}
