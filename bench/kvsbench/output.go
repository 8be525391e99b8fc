//go:build linux

package kvsbench

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/sdnkvs/sdnkvs/bench/report"
	"gonum.org/v1/plot/vg"
)

// tables returns the results and the memory of a report as tables.
func (r *Report) tables() (results, rss *report.Table) {
	results = report.NewTable("system", "op", "pipeline", "ops_per_s", "p50_ms", "p99_ms", "driver")
	for _, x := range r.Results {
		results.Add(x.System, x.Test, strconv.Itoa(x.Pipeline), strconv.FormatFloat(x.OpsPerS, 'f', 0, 64),
			strconv.FormatFloat(x.P50ms, 'f', 3, 64), strconv.FormatFloat(x.P99ms, 'f', 3, 64), x.Driver)
	}
	rss = report.NewTable("process", "peak_rss_mib", "rss_mib")
	for _, m := range r.RSS {
		rss.Add(m.Name, strconv.FormatFloat(m.PeakMiB, 'f', 1, 64), strconv.FormatFloat(m.NowMiB, 'f', 1, 64))
	}
	return results, rss
}

// Table renders the report as text.
func (r *Report) Table() string {
	results, rss := r.tables()
	return results.String() + "\n" + rss.String()
}

// writeOutputs writes kvs-results.csv, kvs-rss.csv and kvs.png into dir.
func writeOutputs(dir string, r *Report) error {
	results, rss := r.tables()
	if err := results.WriteCSV(filepath.Join(dir, "kvs-results.csv")); err != nil {
		return err
	}
	if err := rss.WriteCSV(filepath.Join(dir, "kvs-rss.csv")); err != nil {
		return err
	}
	return plotBars(filepath.Join(dir, "kvs.png"), r)
}

// plotBars draws ops/s per test (SET/GET x pipelining), one bar per system.
func plotBars(path string, r *Report) error {
	type cat struct {
		test string
		pipe int
	}
	var cats []cat
	var systems []string
	seenC, seenS := map[cat]bool{}, map[string]bool{}
	// etcd's load generator sends one request at a time per worker: it sits
	// with the unpipelined runs.
	pipeOf := func(x Result) int { return max(x.Pipeline, 1) }
	for _, x := range r.Results {
		c := cat{x.Test, pipeOf(x)}
		if !seenC[c] {
			seenC[c] = true
			cats = append(cats, c)
		}
		if !seenS[x.System] {
			seenS[x.System] = true
			systems = append(systems, x.System)
		}
	}
	gp := report.GroupedBarPlot{
		Title:  "KVS throughput, P = pipeline depth (higher is better; numbers in kvs-results.csv)",
		YLabel: "operations/s",
		Width:  9 * vg.Inch,
		Height: 5 * vg.Inch,
	}
	for _, c := range cats {
		gp.Labels = append(gp.Labels, fmt.Sprintf("%s P%d", c.test, c.pipe))
	}
	for _, s := range systems {
		vals := make([]float64, len(cats))
		for ci, c := range cats {
			for _, x := range r.Results {
				if x.System == s && x.Test == c.test && pipeOf(x) == c.pipe {
					vals[ci] = x.OpsPerS
				}
			}
		}
		gp.Bars = append(gp.Bars, report.Bars{Name: s, Values: vals})
	}
	return gp.Save(path)
}
