package report

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTablePrintAndCSVRoundTrip(t *testing.T) {
	tb := NewTable("mode", "Gbit/s", "ratio")
	tb.Add("kernel", 12.5, 1.0)
	tb.Add("offload", 7.25, 0.58)
	out := tb.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 lines (header, rule, 2 rows), got %d:\n%s", len(lines), out)
	}
	if !strings.HasPrefix(lines[2], "kernel   12.500") {
		t.Errorf("row not aligned/formatted: %q", lines[2])
	}
	path := filepath.Join(t.TempDir(), "sub", "t.csv")
	if err := tb.WriteCSV(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadCSV(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(back.Header, ",") != "mode,Gbit/s,ratio" || len(back.Rows) != 2 || back.Rows[1][1] != "7.250" {
		t.Fatalf("round trip mismatch: %+v", back)
	}
}

func TestPlotsWritePNG(t *testing.T) {
	dir := t.TempDir()
	lp := LinePlot{Title: "rtt", XLabel: "s", YLabel: "ms", Series: []Series{
		{Name: "a", X: []float64{0, 1, 2}, Y: []float64{10, 12, 11}},
		{Name: "b", X: []float64{0, 1, 2}, Y: []float64{340, 341, 339}},
	}}
	bp := BarPlot{Title: "tput", YLabel: "Gbit/s", Labels: []string{"kernel", "offload"}, Values: []float64{12, 7}}
	gp := GroupedBarPlot{Title: "ops", YLabel: "ops/s", Labels: []string{"SET", "GET"}, Bars: []Bars{
		{Name: "sdnkvs", Values: []float64{14800, 27200}}, {Name: "etcd", Values: []float64{7400, 8700}},
	}}
	for name, save := range map[string]func(string) error{"line.png": lp.Save, "bar.png": bp.Save, "grouped.png": gp.Save} {
		p := filepath.Join(dir, name)
		if err := save(p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatalf("%s is not a PNG", name)
		}
	}
	if err := (LinePlot{Series: []Series{{X: []float64{1}, Y: nil}}}).Save(filepath.Join(dir, "bad.png")); err == nil {
		t.Fatal("mismatched series lengths accepted")
	}
	if err := (BarPlot{Labels: []string{"a"}}).Save(filepath.Join(dir, "bad2.png")); err == nil {
		t.Fatal("bar plot without values accepted")
	}
	if err := (GroupedBarPlot{Labels: []string{"a", "b"}, Bars: []Bars{{Name: "x", Values: []float64{1}}}}).Save(filepath.Join(dir, "bad3.png")); err == nil {
		t.Fatal("grouped bar plot with a short group accepted")
	}
}
