//go:build linux

package demo

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
)

// maxGap is the longest interval (s) without an event in sorted-or-not
// times, counting from the first event to end.
func maxGap(times []int64, end int64) float64 {
	if len(times) == 0 {
		return float64(end) / float64(time.Second)
	}
	ts := slices.Clone(times)
	slices.Sort(ts)
	var g int64
	for i := 1; i < len(ts); i++ {
		g = max(g, ts[i]-ts[i-1])
	}
	g = max(g, end-ts[len(ts)-1])
	return float64(g) / float64(time.Second)
}

// throughput fills the before/after rates: before is [0, cut), after is
// [cut + RTO, end) for each kind of operation (the whole run when there
// was no cut).
func throughput(res *Result, writes, reads []int64, cut, end time.Duration) {
	rate := func(ts []int64, from, to time.Duration) float64 {
		if to <= from {
			return 0
		}
		n := 0
		for _, t := range ts {
			if t >= int64(from) && t < int64(to) {
				n++
			}
		}
		return float64(n) / (to - from).Seconds()
	}
	if cut < 0 {
		res.WritesPerSBefore = rate(writes, 0, end)
		res.ReadsPerSBefore = rate(reads, 0, end)
		return
	}
	res.WritesPerSBefore = rate(writes, 0, cut)
	res.ReadsPerSBefore = rate(reads, 0, cut)
	if res.RTOWrite >= 0 {
		res.WritesPerSAfter = rate(writes, cut+time.Duration(res.RTOWrite*float64(time.Second)), end)
	}
	if res.RTORead >= 0 {
		res.ReadsPerSAfter = rate(reads, cut+time.Duration(res.RTORead*float64(time.Second)), end)
	}
}

// WriteFiles writes the per-second series as CSV and a PNG plot into dir,
// named prefix.csv and prefix.png, and returns their paths.
func WriteFiles(dir, prefix string, r *Result) ([]string, error) {
	t, p := seriesTable(r.Series, []string{r.Near, r.Far},
		[]string{"errors", "write_reconnects", "read_reconnects", "write_resets", "read_resets", "stale_reads", "cut"},
		func(b scenario.Bin) []any {
			isCut := 0
			if r.CutAt >= 0 && b.Second == int(r.CutAt) {
				isCut = 1
			}
			return []any{b.Errors, b.WriteReconnects, b.ReadReconnects, b.WriteResets, b.ReadResets, b.Stale, isCut}
		})
	title := fmt.Sprintf("sdnkvs demo (%s): %s cut at %.1fs, RPO %d of %d", r.Mode, r.Near, r.CutAt, r.RPOLost, r.AckedWrites)
	if r.CutAt < 0 {
		title = fmt.Sprintf("sdnkvs demo (%s): no cut, RPO %d of %d", r.Mode, r.RPOLost, r.AckedWrites)
	}
	lp := report.LinePlot{
		Title: title, XLabel: "time (s)", YLabel: "operations per second",
		Series: []report.Series{
			{Name: "writes acked" + map[bool]string{true: " (forked)"}[r.Mode == "sdn"], X: p.xs, Y: p.writes},
			{Name: "reads" + map[bool]string{true: " (anycast)"}[r.Mode == "sdn"], X: p.xs, Y: p.reads},
		},
	}
	if r.CutAt >= 0 {
		lp.Series = append(lp.Series, report.Series{Name: "cut", X: []float64{r.CutAt, r.CutAt}, Y: []float64{0, p.top}})
	}
	return saveReport(dir, prefix, lp, csvFile{table: t})
}

// Print writes the human-readable summary of r.
func (r *Result) Print(out io.Writer) {
	w := &bytes.Buffer{}
	defer func() { out.Write(w.Bytes()) }()
	fmt.Fprintf(w, "\n== sdnkvs demo (%s", r.Mode)
	if r.Detector != "" {
		fmt.Fprintf(w, ", detector %s", r.Detector)
	}
	fmt.Fprintf(w, "): %s near, %s far, %d nodes each ==\n", r.Near, r.Far, r.Nodes)
	t := report.NewTable("measure", "value")
	t.Add("RPO: acknowledged writes lost", fmt.Sprintf("%d of %d (checked in %s; %d missing, %d wrong)", r.RPOLost, r.AckedWrites, r.CheckedDC, r.RPOMissing, r.RPOWrong))
	if r.CutAt >= 0 {
		t.Add("acknowledged before cut / during recovery / after", fmt.Sprintf("%d / %d / %d", r.AckedBeforeCut, r.AckedDuringRecovery, r.AckedAfterCut-r.AckedDuringRecovery))
		t.Add("near DC cut at", fmt.Sprintf("%.2f s", r.CutAt))
		t.Add("RTO reads (cut -> first read sent after it answered)", secs(r.RTORead))
		t.Add("RTO writes (cut -> first write sent after it acknowledged)", secs(r.RTOWrite))
	}
	t.Add("longest time with no write acknowledged", fmt.Sprintf("%.2f s", r.WriteStallMax))
	t.Add("write connections reset", r.WriteResets)
	t.Add("reconnects (writes / reads)", fmt.Sprintf("%d / %d", r.WriteReconnects, r.ReadReconnects))
	t.Add("read connections reset", r.ReadResets)
	t.Add("errors (replies and connections)", r.Errors)
	t.Add("stale reads (acked key missing)", r.StaleReads)
	t.Add("writes/s before -> after", fmt.Sprintf("%.0f -> %.0f", r.WritesPerSBefore, r.WritesPerSAfter))
	t.Add("reads/s before -> after", fmt.Sprintf("%.0f -> %.0f", r.ReadsPerSBefore, r.ReadsPerSAfter))
	t.Add("reads served before cut", fmtDCs(r.ReadsByDCBefore))
	t.Add("reads served after cut", fmtDCs(r.ReadsByDCAfter))
	t.Fprint(w)
	printTail(w, "middlebox failover decisions (time from workload start):", r.Transitions, r.LostSamples, r.Files)
}

func fmtDCs(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
