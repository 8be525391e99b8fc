//go:build linux

package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestMain(m *testing.M) { testbedtest.Main(m) }

// shortConfig is a small, quick topology for tests: 3 nodes per DC,
// short delays.
func shortConfig(t *testing.T) Config {
	return Config{
		Bin: testbedtest.SharedBinary(t), Topology: scenario.Topology{DCs: []testbed.DC{
			{Name: "sydney", Nodes: 3, Delay: 2 * time.Millisecond, Rate: 100e6},
			{Name: "dublin", Nodes: 3, Delay: 30 * time.Millisecond, Rate: 100e6},
		}},
		Duration: 8 * time.Second, CutAt: 3 * time.Second, Writers: 4, Window: 32, Rate: 800, Readers: 2,
		DataDir: t.TempDir(), Log: testbedtest.Log(t),
	}
}

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
	res.Print(testbedtest.Log(t))
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

// The paper's claims end to end, on a small topology: every write
// acknowledged before, during and after the cut is in the far DC (RPO = 0),
// forked write connections survive the cut without a reset, and anycast
// readers move to the far DC.
func TestDemoRPOZero(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := shortConfig(t)
	cfg.Out = t.TempDir()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	res.Print(testbedtest.Log(t))
	if res.AckedBeforeCut == 0 || res.AckedAfterCut == 0 {
		t.Fatalf("acknowledged writes before/after the cut: %d/%d, want both > 0", res.AckedBeforeCut, res.AckedAfterCut)
	}
	if res.RPOLost != 0 {
		t.Errorf("RPO: %d of %d acknowledged writes missing or wrong in %s (samples %v)", res.RPOLost, res.AckedWrites, res.Far, res.LostSamples)
	}
	if res.RTOWrite < 0 || res.RTORead < 0 {
		t.Errorf("service did not resume after the cut: RTO write %v, read %v", res.RTOWrite, res.RTORead)
	}
	if res.WriteResets != 0 {
		t.Errorf("%d forked write connections were reset by the cut, want none", res.WriteResets)
	}
	if res.ReadsByDCBefore[res.Near] == 0 || res.ReadsByDCAfter[res.Far] == 0 {
		t.Errorf("reads by DC before %v, after %v: want the near DC before and the far DC after", res.ReadsByDCBefore, res.ReadsByDCAfter)
	}
	if res.StaleReads != 0 {
		t.Errorf("%d reads missed an acknowledged write", res.StaleReads)
	}
	if len(res.Files) != 2 {
		t.Errorf("files written: %v, want a CSV and a PNG", res.Files)
	}
	for _, f := range res.Files {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// `sdnkvs demo --json` in a shortened form prints one JSON object with
// the agreed fields and RPO = 0.
func TestDemoBinaryJSON(t *testing.T) {
	testenv.RequireRoot(t)
	bin := testbedtest.SharedBinary(t)
	cmd := exec.Command(bin, "demo", "--json", "--nodes", "3", "--delay", "sydney=2ms,dublin=30ms",
		"--duration", "6s", "--cut-at", "2s", "--write-rate", "400", "--writers", "2", "--window", "32", "--readers", "1",
		"--out", t.TempDir(), "--data", t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sdnkvs demo --json: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	for _, k := range []string{"acked_writes", "rpo_lost", "rto_read_s", "rto_write_s", "write_resets"} {
		if _, ok := m[k].(float64); !ok {
			t.Errorf("JSON field %q missing or not a number: %v", k, m[k])
		}
	}
	if m["acked_writes"].(float64) <= 0 || m["rpo_lost"].(float64) != 0 {
		t.Errorf("acked_writes %v rpo_lost %v: want > 0 and 0\nstderr:\n%s", m["acked_writes"], m["rpo_lost"], stderr.String())
	}
}

// readMarker opens a new anycast connection (or uses c) and returns the
// name of the DC that answered.
func readMarker(t *testing.T, ctx context.Context, env *scenario.Env, c *resp.Client) string {
	t.Helper()
	if c == nil {
		conn, err := env.DialClient(ctx, scenario.ReadPort)
		if err != nil {
			t.Fatalf("dial VIP:%d: %v", scenario.ReadPort, err)
		}
		c = resp.NewClient(conn)
		defer c.Close()
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := c.Do(rctx, []byte("GET"), []byte(scenario.MarkerKey))
	if err != nil {
		t.Fatalf("GET marker through VIP:%d: %v", scenario.ReadPort, err)
	}
	return string(rep.Str)
}

// After a cut, a healed DC whose servers are not ready stays out; once they
// are ready it is readmitted for new flows only: a flow opened meanwhile
// stays on the far DC.
func TestHealReadmitsOnlyWhenReady(t *testing.T) {
	testenv.RequireRoot(t)
	cfg, err := shortConfig(t).WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	env, err := scenario.NewEnv(ctx, scenario.EnvConfig{Bin: cfg.Bin, DCs: cfg.DCs, DataDir: cfg.DataDir, Log: cfg.Log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	// Unsequenced stores: readmission on reachability (--rejoin trust) is
	// what this test checks; the default there (manual) keeps a healed DC
	// joining until an operator admits it.
	if err := env.StartMiddlebox(ctx, scenario.MB{Detector: "fast", AnycastOnly: true, Extra: []string{"--rejoin", "trust"}}); err != nil {
		t.Fatal(err)
	}
	near, far := cfg.Near(), cfg.Far()
	if got := readMarker(t, ctx, env, nil); got != near {
		t.Fatalf("before the cut a new anycast flow reached %q, want %q", got, near)
	}
	if err := env.TB.Cut(near); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := env.WaitDCLive(wctx, near, false); err != nil {
		t.Fatal(err)
	}
	if got := readMarker(t, ctx, env, nil); got != far {
		t.Fatalf("after the cut a new anycast flow reached %q, want %q", got, far)
	}
	// The DC comes back without its servers: reachable, not ready.
	env.StopCluster(near)
	if err := env.TB.Heal(near); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(2 * time.Second)
	for time.Now().Before(until) {
		live, err := env.DCLive(near)
		if err != nil {
			t.Fatal(err)
		}
		if live {
			t.Fatalf("%s readmitted while none of its servers runs", near)
		}
		if got := readMarker(t, ctx, env, nil); got != far {
			t.Fatalf("healed but not ready: a new anycast flow reached %q, want %q", got, far)
		}
	}
	// A flow opened while the near DC is out.
	conn, err := env.DialClient(ctx, scenario.ReadPort)
	if err != nil {
		t.Fatal(err)
	}
	old := resp.NewClient(conn)
	defer old.Close()
	if got := readMarker(t, ctx, env, old); got != far {
		t.Fatalf("flow opened during the outage reached %q, want %q", got, far)
	}
	if err := env.StartCluster(ctx, near); err != nil {
		t.Fatal(err)
	}
	wctx2, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	if err := env.WaitDCLive(wctx2, near, true); err != nil {
		t.Fatal(err)
	}
	if got := readMarker(t, ctx, env, nil); got != near {
		t.Fatalf("after readmission a new anycast flow reached %q, want %q", got, near)
	}
	if got := readMarker(t, ctx, env, old); got != far {
		t.Fatalf("an existing flow moved to %q after readmission, want it to stay on %q", got, far)
	}
}
