//go:build linux

package demo

import (
	"bytes"
	"fmt"
	"io"

	"github.com/sdnkvs/sdnkvs/bench/report"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
)

// WriteLifecycleFiles writes prefix.csv (the per-second series with the
// DCs' states), prefix-disasters.csv (one row per disaster) and
// prefix.png (writes and reads per second, cuts, heals and rejoins
// marked) into dir and returns their paths.
func WriteLifecycleFiles(dir, prefix string, r *LifecycleResult) ([]string, error) {
	t, p := seriesTable(r.Series, []string{r.Near, r.Far},
		[]string{"errors", "write_resets", "read_resets", "stale_reads", "state_" + r.Near, "state_" + r.Far},
		func(b scenario.Bin) []any {
			return []any{b.Errors, b.WriteResets, b.ReadResets, b.Stale,
				stateAt(r, r.Near, float64(b.Second+1)), stateAt(r, r.Far, float64(b.Second+1))}
		})
	dt := report.NewTable("disaster", "dc", "survivor", "cut_at_s", "down_at_s", "rto_write_s", "rto_read_s",
		"checked", "lost", "heal_at_s", "joining_at_s", "pass_done_at_s", "live_at_s", "catchup_s", "catchup_keys", "catchup_bytes")
	for _, d := range r.Disasters {
		dt.Add(d.N, d.DC, d.Survivor, d.CutAt, d.DownAt, d.RTOWrite, d.RTORead, d.Checked, d.Lost,
			d.HealAt, d.JoiningAt, d.PassDoneAt, d.LiveAt, d.CatchupS, d.CatchupKeys, d.CatchupBytes)
	}
	lp := report.LinePlot{
		Title: fmt.Sprintf("sdnkvs lifecycle: %d disasters, %d rejoins, RPO %d of %d, %d stale reads",
			len(r.Disasters), r.Rejoins, r.RPOLost, r.AckedWrites, r.StaleReads),
		XLabel: "time (s)", YLabel: "operations per second",
		Series: []report.Series{
			{Name: "writes acked (forked)", X: p.xs, Y: p.writes},
			{Name: "reads (anycast)", X: p.xs, Y: p.reads},
		},
	}
	var cutX, healX, liveX []float64
	for _, d := range r.Disasters {
		cutX = append(cutX, d.CutAt)
		if d.HealAt >= 0 {
			healX = append(healX, d.HealAt)
		}
		if d.LiveAt >= 0 {
			liveX = append(liveX, d.LiveAt)
		}
	}
	for _, m := range []struct {
		name string
		xs   []float64
	}{{"cut", cutX}, {"heal", healX}, {"live again", liveX}} {
		if len(m.xs) > 0 {
			lp.Series = append(lp.Series, markers(m.name, m.xs, p.top))
		}
	}
	return saveReport(dir, prefix, lp, csvFile{table: t}, csvFile{suffix: "-disasters", table: dt})
}

// markers is one series of vertical lines at xs from 0 to top (joined
// along the x axis).
func markers(name string, xs []float64, top float64) report.Series {
	s := report.Series{Name: name}
	for _, x := range xs {
		s.X = append(s.X, x, x, x)
		s.Y = append(s.Y, 0, top, 0)
	}
	return s
}

// stateAt is DC dc's lifecycle state at second at (from the timeline).
func stateAt(r *LifecycleResult, dc string, at float64) string {
	st := ""
	for _, c := range r.Changes {
		if c.DC == dc && c.At.Seconds() <= at {
			st = c.To
		}
	}
	return st
}

// Print writes the human-readable summary of r.
func (r *LifecycleResult) Print(out io.Writer) {
	w := &bytes.Buffer{}
	defer func() { out.Write(w.Bytes()) }()
	fmt.Fprintf(w, "\n== sdnkvs demo --scenario lifecycle (rejoin %s, detector %s): %s near, %s far, %d nodes each ==\n",
		r.Rejoin, r.Detector, r.Near, r.Far, r.Nodes)
	secs := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	dt := report.NewTable("#", "cut", "at s", "down +s", "RTO w s", "survivor holds", "healed at s", "joining +s", "1st pass done +s", "live +s (catch-up)", "keys copied", "MB copied")
	for _, d := range r.Disasters {
		rel := func(t float64) string {
			if t < 0 || d.HealAt < 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", t-d.HealAt)
		}
		down := "-"
		if d.DownAt >= 0 {
			down = fmt.Sprintf("%.2f", d.DownAt-d.CutAt)
		}
		dt.Add(d.N, d.DC, secs(d.CutAt), down, secs(d.RTOWrite), fmt.Sprintf("%d/%d", d.Checked-d.Lost, d.Checked),
			secs(d.HealAt), rel(d.JoiningAt), rel(d.PassDoneAt), rel(d.LiveAt), d.CatchupKeys, fmt.Sprintf("%.1f", float64(d.CatchupBytes)/1e6))
	}
	dt.Fprint(w)
	t := report.NewTable("measure", "value")
	t.Add("RPO: most acknowledged writes a survivor lacked", fmt.Sprintf("%d (over %d checks, one per disaster, and the final one)", r.RPOLost, len(r.Disasters)))
	if r.FinalLost < 0 {
		t.Add("final check", "not made (the run stopped early)")
	} else {
		t.Add("final check", fmt.Sprintf("%d of %d lost in %s", r.FinalLost, r.AckedWrites, r.FinalDC))
	}
	t.Add("rejoins (healed -> live)", fmt.Sprintf("%d, longest %.2f s", r.Rejoins, r.CatchupMaxS))
	t.Add("stale reads (all / after the first rejoin)", fmt.Sprintf("%d / %d of %d reads", r.StaleReads, r.StaleAfterRejoin, r.Reads))
	t.Add("reads served", fmtDCs(r.ReadsByDC))
	t.Add("longest time with no write acknowledged", fmt.Sprintf("%.2f s", r.WriteStallMax))
	t.Add("writes/s (whole run)", fmt.Sprintf("%.0f", r.WritesPerS))
	t.Add("write connections reset / errors", fmt.Sprintf("%d / %d", r.WriteResets, r.Errors))
	t.Fprint(w)
	printTail(w, "DC states (time from workload start):", r.Timeline, r.LostSamples, r.Files)
}
