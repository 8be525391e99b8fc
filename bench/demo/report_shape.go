//go:build linux

package demo

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/sdnkvs/sdnkvs/bench/report"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
)

// The shape the demo's reports share (the cut scenario's in output.go, the
// lifecycle scenario's in lifecycle_output.go, the repeated runs' in
// runs.go): a per-second series as a CSV table and as plot points, CSV
// files and a PNG written side by side, and the tail of the text summary.

// points is the per-second series as plot points.
type points struct {
	xs, writes, reads []float64
	top               float64 // the largest count, at least 1: the height of markers
}

// seriesTable is the per-second series as a table with the columns second,
// writes_acked, reads, reads_<dc> for each of dcs and reads_unknown, then
// extraHdr's, filled for each bin by extra; and as plot points.
func seriesTable(series []scenario.Bin, dcs, extraHdr []string, extra func(b scenario.Bin) []any) (*report.Table, points) {
	hdr := []string{"second", "writes_acked", "reads"}
	for _, d := range append(dcs[:len(dcs):len(dcs)], "unknown") {
		hdr = append(hdr, "reads_"+d)
	}
	t := report.NewTable(append(hdr, extraHdr...)...)
	p := points{top: 1}
	for _, b := range series {
		row := []any{b.Second + 1, b.Writes, b.Reads}
		for _, v := range b.ReadsByDC {
			row = append(row, v)
		}
		t.Add(append(row, extra(b)...)...)
		p.xs = append(p.xs, float64(b.Second+1))
		p.writes = append(p.writes, float64(b.Writes))
		p.reads = append(p.reads, float64(b.Reads))
		p.top = max(p.top, float64(b.Writes), float64(b.Reads))
	}
	return t, p
}

// csvFile is a table to write as <prefix><suffix>.csv.
type csvFile struct {
	suffix string
	table  *report.Table
}

// saveReport writes each table as dir/<prefix><suffix>.csv, in order, then
// the plot as dir/<prefix>.png, and returns the paths written before the
// first error.
func saveReport(dir, prefix string, lp report.LinePlot, csvs ...csvFile) ([]string, error) {
	var files []string
	for _, c := range csvs {
		path := filepath.Join(dir, prefix+c.suffix+".csv")
		if err := c.table.WriteCSV(path); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	path := filepath.Join(dir, prefix+".png")
	if err := lp.Save(path); err != nil {
		return files, err
	}
	return append(files, path), nil
}

// printTail ends a text summary: events under heading (when there are
// any), a sample of the lost keys, and the files written.
func printTail(w io.Writer, heading string, events, lost, files []string) {
	if len(events) > 0 {
		fmt.Fprintf(w, "%s\n", heading)
		for _, e := range events {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	if len(lost) > 0 {
		fmt.Fprintf(w, "lost keys (sample): %s\n", strings.Join(lost, " "))
	}
	for _, f := range files {
		fmt.Fprintf(w, "wrote %s\n", f)
	}
}
