package demo

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func dialNever(ctx context.Context) (net.Conn, error) { return nil, errors.New("no network in this test") }

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

// sdnkvsBinary builds the sdnkvs command once per test binary. A failed
// build fails the test under CI and skips it otherwise (another package
// may be mid-edit).
func sdnkvsBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "sdnkvs-demo-test-")
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

// shortConfig is a small, quick topology for tests: 3 nodes per DC,
// short delays.
func shortConfig(t *testing.T) Config {
	return Config{
		Bin: sdnkvsBinary(t), Nodes: 3, NearDelay: 2 * time.Millisecond, FarDelay: 30 * time.Millisecond,
		Duration: 8 * time.Second, CutAt: 3 * time.Second, Writers: 4, Window: 32, Rate: 800, Readers: 2,
		DataDir: t.TempDir(), Log: testLog{t},
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) { l.t.Logf("%s", b); return len(b), nil }

// The baseline without the middlebox: writes acknowledged by the near DC
// alone are lost when it is cut, and the client never recovers. This shows
// the checker finds lost writes.
func TestDirectBaselineLosesWrites(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := shortConfig(t)
	cfg.Mode = "direct"
	cfg.Duration, cfg.CutAt = 5*time.Second, 2*time.Second
	cfg.OpTimeout = 500 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	res.Print(testLog{t})
	if res.AckedBeforeCut == 0 {
		t.Fatalf("no write acknowledged before the cut")
	}
	if res.RPOLost != res.AckedWrites {
		t.Errorf("direct mode: %d of %d acknowledged writes lost in %s, want all (they were only in %s)", res.RPOLost, res.AckedWrites, res.Far, res.Near)
	}
	if res.RTOWrite != -1 || res.RTORead != -1 {
		t.Errorf("direct mode: service resumed after the cut of the only DC used (RTO write %v, read %v)", res.RTOWrite, res.RTORead)
	}
	if res.ReadsByDCBefore[res.Near] == 0 || res.ReadsByDCAfter[res.Far] != 0 {
		t.Errorf("reads by DC before %v after %v: want near only", res.ReadsByDCBefore, res.ReadsByDCAfter)
	}
}
