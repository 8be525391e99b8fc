//go:build linux

package race

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
)

func TestQuantile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if q := quantile(d, 0.5); q != 51*time.Millisecond {
		t.Errorf("p50 = %v", q)
	}
	if q := quantile(d, 0.99); q != 100*time.Millisecond {
		t.Errorf("p99 = %v", q)
	}
	if d[0] != 100*time.Millisecond {
		t.Error("quantile sorted its input in place")
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing")
	}
}

func TestResultFiles(t *testing.T) {
	r := &Result{
		Rows: []Row{{Writers: 8, Rounds: 200, Differ: 133, P50: 120 * time.Millisecond, P99: 200 * time.Millisecond},
			{Sequenced: true, Writers: 8, Rounds: 200, P50: 121 * time.Millisecond, P99: 190 * time.Millisecond}},
		Load: []LoadRow{{Clients: 16, Ops: 1000, OpsPerS: 500, P99: 100 * time.Millisecond}, {Sequenced: true, Clients: 16, Ops: 1100, OpsPerS: 550, P99: 90 * time.Millisecond}},
	}
	dir := t.TempDir()
	files, err := r.WriteFiles(dir)
	if err != nil || len(files) != 3 {
		t.Fatalf("files %v, err %v", files, err)
	}
	tab, err := report.ReadCSV(filepath.Join(dir, "race.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Rows) != 2 || tab.Rows[0][0] != "unsequenced" || tab.Rows[0][3] != "133" || tab.Rows[1][3] != "0" {
		t.Fatalf("race.csv rows %v", tab.Rows)
	}
	if lt := r.LoadTable().String(); !strings.Contains(lt, "1.10") || !strings.Contains(lt, "0.90") {
		t.Fatalf("load table lacks the ratios to the unsequenced run:\n%s", lt)
	}
	if st, err := os.Stat(filepath.Join(dir, "race.png")); err != nil || st.Size() == 0 {
		t.Fatalf("race.png: %v", err)
	}
}
