//go:build linux

package demo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
)

// bins is a synthetic per-second series of n seconds with reads by two DCs
// and unknown.
func bins(n int) []scenario.Bin {
	var bs []scenario.Bin
	for s := range n {
		bs = append(bs, scenario.Bin{Second: s, Writes: int64(100 + s), Reads: int64(50 - s), Errors: int64(s % 2),
			WriteResets: int64(s), Stale: int64(s % 3), ReadsByDC: []int64{int64(s), 7, 1}})
	}
	return bs
}

func readCSV(t *testing.T, path string) *report.Table {
	t.Helper()
	tb, err := report.ReadCSV(path)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// The cut scenario's CSV has the shared per-second columns, then its own,
// with the cut marked in its second; the PNG is written beside it.
func TestWriteFilesColumns(t *testing.T) {
	dir := t.TempDir()
	r := &Result{Mode: "sdn", Near: "sydney", Far: "dublin", CutAt: 2.5, Series: bins(4)}
	files, err := WriteFiles(dir, "demo", r)
	if err != nil || len(files) != 2 || files[0] != filepath.Join(dir, "demo.csv") || files[1] != filepath.Join(dir, "demo.png") {
		t.Fatalf("files %v: %v", files, err)
	}
	tb := readCSV(t, files[0])
	want := "second writes_acked reads reads_sydney reads_dublin reads_unknown errors write_reconnects read_reconnects write_resets read_resets stale_reads cut"
	if got := strings.Join(tb.Header, " "); got != want {
		t.Errorf("header %q, want %q", got, want)
	}
	if len(tb.Rows) != 4 || strings.Join(tb.Rows[2], ",") != "3,102,48,2,7,1,0,0,0,2,0,2,1" || tb.Rows[1][12] != "0" {
		t.Errorf("rows %v", tb.Rows)
	}
	if st, err := os.Stat(files[1]); err != nil || st.Size() == 0 {
		t.Errorf("png: %v", err)
	}
}

// The lifecycle scenario writes the series with each DC's state, one row
// per disaster and the PNG, in that order.
func TestWriteLifecycleFilesColumns(t *testing.T) {
	dir := t.TempDir()
	r := &LifecycleResult{Near: "sydney", Far: "dublin", Series: bins(4),
		Disasters: []Disaster{{N: 1, DC: "sydney", Survivor: "dublin", CutAt: 1, HealAt: 2, LiveAt: 3.5, CatchupKeys: 9}},
		Changes:   []scenario.StateChange{{At: time.Second, DC: "sydney", To: "down"}, {At: 2500 * time.Millisecond, DC: "sydney", To: "joining"}}}
	files, err := WriteLifecycleFiles(dir, "life", r)
	if err != nil || len(files) != 3 || filepath.Base(files[0]) != "life.csv" || filepath.Base(files[1]) != "life-disasters.csv" || filepath.Base(files[2]) != "life.png" {
		t.Fatalf("files %v: %v", files, err)
	}
	tb := readCSV(t, files[0])
	want := "second writes_acked reads reads_sydney reads_dublin reads_unknown errors write_resets read_resets stale_reads state_sydney state_dublin"
	if got := strings.Join(tb.Header, " "); got != want {
		t.Errorf("header %q, want %q", got, want)
	}
	if len(tb.Rows) != 4 || tb.Rows[0][10] != "down" || tb.Rows[2][10] != "joining" || tb.Rows[2][11] != "" {
		t.Errorf("rows %v", tb.Rows)
	}
	if dt := readCSV(t, files[1]); len(dt.Rows) != 1 || dt.Header[0] != "disaster" || dt.Rows[0][1] != "sydney" {
		t.Errorf("disasters %v %v", dt.Header, dt.Rows)
	}
}

// A report whose directory cannot be made (a file stands in its place)
// says so and lists no file.
func TestWriteFilesBadDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := WriteFiles(dir, "demo", &Result{Near: "a", Far: "b", CutAt: -1, Series: bins(1)})
	if err == nil || len(files) != 0 {
		t.Fatalf("files %v, err %v: want an error and none", files, err)
	}
}

// Every summary ends the same way: its events under their heading, the
// lost keys, the files; empty parts are left out.
func TestPrintTails(t *testing.T) {
	var cut, life, runs strings.Builder
	(&Result{Near: "sydney", Far: "dublin", CutAt: 1, RTOWrite: -1, RTORead: 0.25,
		Transitions: []string{"+1.00s sydney down"}, LostSamples: []string{"k1", "k2"}, Files: []string{"x.csv"}}).Print(&cut)
	(&LifecycleResult{Near: "sydney", Far: "dublin", FinalLost: -1, Timeline: []string{"+1s sydney live->down"}, Files: []string{"l.csv"}}).Print(&life)
	(&RunsResult{Files: []string{"r.csv", "r.png"}}).Print(&runs)
	for _, c := range []struct{ got, want string }{
		{cut.String(), "RTO reads (cut -> first read sent after it answered)        0.25 s\n"},
		{cut.String(), "RTO writes (cut -> first write sent after it acknowledged)  not recovered\n"},
		{cut.String(), "middlebox failover decisions (time from workload start):\n  +1.00s sydney down\nlost keys (sample): k1 k2\nwrote x.csv\n"},
		{life.String(), "final check                                      not made (the run stopped early)\n"},
		{life.String(), "DC states (time from workload start):\n  +1s sydney live->down\nwrote l.csv\n"},
		{runs.String(), "acknowledged writes lost over the runs\nwrote r.csv\nwrote r.png\n"},
	} {
		if !strings.Contains(c.got, c.want) {
			t.Errorf("summary lacks %q:\n%s", c.want, c.got)
		}
	}
	if strings.Contains(life.String(), "lost keys") || strings.Contains(runs.String(), "(time from workload start)") {
		t.Errorf("empty parts printed:\n%s\n%s", life.String(), runs.String())
	}
}
