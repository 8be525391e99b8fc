package kvsbench

import (
	"encoding/csv"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// writeOutputs writes results.csv, rss.csv and kvs.png into dir.
func writeOutputs(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rows := [][]string{{"system", "op", "pipeline", "ops_per_s", "p50_ms", "p99_ms", "driver"}}
	for _, x := range r.Results {
		rows = append(rows, []string{x.System, x.Test, strconv.Itoa(x.Pipeline),
			strconv.FormatFloat(x.OpsPerS, 'f', 0, 64), strconv.FormatFloat(x.P50ms, 'f', 3, 64),
			strconv.FormatFloat(x.P99ms, 'f', 3, 64), x.Driver})
	}
	if err := writeCSV(filepath.Join(dir, "kvs-results.csv"), rows); err != nil {
		return err
	}
	rows = [][]string{{"process", "peak_rss_mib", "rss_mib"}}
	for _, m := range r.RSS {
		rows = append(rows, []string{m.Name, strconv.FormatFloat(m.PeakMiB, 'f', 1, 64), strconv.FormatFloat(m.NowMiB, 'f', 1, 64)})
	}
	if err := writeCSV(filepath.Join(dir, "kvs-rss.csv"), rows); err != nil {
		return err
	}
	return plotBars(filepath.Join(dir, "kvs.png"), r)
}

func writeCSV(path string, rows [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.WriteAll(rows)
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
	p := plot.New()
	p.Title.Text = "KVS throughput, 50 clients, P = pipeline depth (higher is better; numbers in kvs-results.csv)"
	p.Y.Label.Text = "operations/s"
	colors := []color.Color{
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255},
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 255},
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 255},
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 255},
	}
	w := vg.Points(14)
	for si, s := range systems {
		vals := make(plotter.Values, len(cats))
		for ci, c := range cats {
			for _, x := range r.Results {
				if x.System == s && x.Test == c.test && pipeOf(x) == c.pipe {
					vals[ci] = x.OpsPerS
				}
			}
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		b.Color = colors[si%len(colors)]
		b.LineStyle.Width = 0
		b.Offset = vg.Length(si-len(systems)/2) * w
		p.Add(b)
		p.Legend.Add(s, b)
	}
	var names []string
	for _, c := range cats {
		names = append(names, fmt.Sprintf("%s P%d", c.test, c.pipe))
	}
	p.NominalX(names...)
	p.Legend.Top = true
	return p.Save(9*vg.Inch, 5*vg.Inch, path)
}
