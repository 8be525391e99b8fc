//go:build linux

package demo

import (
	"os"
	"strings"
	"testing"
)

func TestDistNearestRank(t *testing.T) {
	var vs []float64
	for i := 20; i >= 1; i-- {
		vs = append(vs, float64(i)/10)
	}
	vs = append(vs, -1) // not recovered
	d := distOf(vs)
	if d.Min != 0.1 || d.Median != 1.0 || d.P90 != 1.8 || d.Max != 2.0 || d.Missing != 1 {
		t.Fatalf("dist %+v", d)
	}
	if d := distOf([]float64{-1}); d.Max != -1 || d.Missing != 1 {
		t.Fatalf("all missing: %+v", d)
	}
}

func TestRunsFilesAndTable(t *testing.T) {
	r := &RunsResult{}
	for i, v := range []float64{0.5, 1.4, -1} {
		r.add(&Result{Mode: "sdn", Detector: "fast", Near: "sydney", Far: "dublin", RTOWrite: v, WriteStallMax: v / 2, RTORead: 1.1, RPOLost: i, AckedWrites: 100})
	}
	if r.Runs != 3 || r.RTOWriteDist.Max != 1.4 || r.RTOWriteDist.Missing != 1 || r.Lost() != 3 {
		t.Fatalf("result %+v", r)
	}
	files, err := r.WriteFiles(t.TempDir(), "runs")
	if err != nil || len(files) != 2 {
		t.Fatalf("files %v: %v", files, err)
	}
	b, err := os.ReadFile(files[0])
	if err != nil || strings.Count(string(b), "\n") != 4 || !strings.Contains(string(b), "rto_write_s") {
		t.Fatalf("csv %q: %v", b, err)
	}
	var sb strings.Builder
	r.Print(&sb)
	if !strings.Contains(sb.String(), "3 of 300 acknowledged writes lost") {
		t.Fatalf("table:\n%s", sb.String())
	}
}

func TestFarDecisionsNameOnlyTheSurvivor(t *testing.T) {
	res := &Result{Near: "sydney", Far: "dublin", Transitions: []string{
		"+1.20s sydney down dc (probe): 2 probes missed",
		"+3.40s dublin down dc (probe): 2 probes missed",
		"+3.90s dublin live dc (probe): answered",
	}}
	got := farDecisions(res)
	if len(got) != 2 || !strings.Contains(got[0], "+3.40s dublin down") || !strings.Contains(got[1], "dublin live") {
		t.Fatalf("far decisions %q", got)
	}
	if got := farDecisions(&Result{Near: "sydney", Far: "dublin"}); len(got) != 0 {
		t.Fatalf("no transitions gave %q", got)
	}
}
