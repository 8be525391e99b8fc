package middlebox

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sdnkvs/sdnkvs/failover"
)

// newLostStateMiddlebox tries to start a middlebox on state files that
// already exist (sequencer state seqState, lifecycle state life).
func newLostStateMiddlebox(t *testing.T, seqState, life string) error {
	t.Helper()
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	cfg.Sequencing = &SequencingConfig{Ports: []uint16{6379}, StatePath: seqState, Secret: testOrderSecret}
	cfg.Lifecycle = &LifecycleConfig{LifecycleConfig: failover.LifecycleConfig{Mode: failover.RejoinCatchup, Margin: testMargin}, StatePath: life}
	m, err := New(newFakeDev(false, false), cfg)
	if err == nil {
		m.Close()
	}
	return err
}

// A lifecycle state that is lost (missing while the sequencer's state
// exists: not a first start) or damaged stops the start with an error
// naming the file and the recovery; the recovery (StateLost) starts with
// every DC joining, none trusted, until one is admitted, and the others
// then copy everything from it.
func TestLifecycleLostStateRefusesThenStartsAllJoining(t *testing.T) {
	dir := t.TempDir()
	seqState, life := filepath.Join(dir, "seq.state"), filepath.Join(dir, "lifecycle.json")
	lifeCfg := func(lost bool) func(*Config) {
		return func(c *Config) {
			c.Lifecycle = &LifecycleConfig{LifecycleConfig: failover.LifecycleConfig{Mode: failover.RejoinCatchup, Margin: testMargin}, StatePath: life, StateLost: lost}
		}
	}
	r := newSeqRigCfg(t, seqState, lifeCfg(false))
	r.mb.Close()
	for _, p := range []string{seqState, life} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("after a first run: %v", err)
		}
	}

	if err := os.Remove(life); err != nil {
		t.Fatal(err)
	}
	err := newLostStateMiddlebox(t, seqState, life)
	if err == nil || !strings.Contains(err.Error(), life) || !strings.Contains(err.Error(), seqState) || !strings.Contains(err.Error(), "--rejoin-state-lost") {
		t.Fatalf("missing lifecycle state beside the sequencer's: err = %v, want a refusal naming both files and --rejoin-state-lost", err)
	}

	if err := os.WriteFile(life, []byte(`{"version": 1, "dcs": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	err = newLostStateMiddlebox(t, seqState, life)
	if err == nil || !strings.Contains(err.Error(), life) || !strings.Contains(err.Error(), "--rejoin-state-lost") {
		t.Fatalf("damaged lifecycle state: err = %v, want a refusal naming the file and --rejoin-state-lost", err)
	}

	r2 := newSeqRigCfg(t, seqState, lifeCfg(true))
	for _, dc := range []string{"sydney", "dublin"} {
		if s := r2.life(t, dc); s.State != failover.DCStateJoining || s.Cause != failover.LifeRestored {
			t.Fatalf("%s with the state lost: %+v, want joining (restored)", dc, s)
		}
	}
	rec := httptest.NewRecorder()
	r2.mb.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/dcs/dublin/admit", nil))
	if rec.Code != 200 || r2.life(t, "dublin").State != failover.DCStateLive {
		t.Fatalf("admit: %d %s", rec.Code, rec.Body)
	}
	cu := r2.waitCatchup(t, syd1, 0)
	if cu.SourceName() != "dublin" || cu.G != 0 || cu.W != 0 {
		t.Fatalf("sydney's CATCHUP: source %q from %d.%d, want dublin from the start", cu.SourceName(), cu.G, cu.W)
	}
}
