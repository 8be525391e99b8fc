//go:build linux

package race

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
)

func mode(seq bool) string {
	if seq {
		return "sequenced"
	}
	return "unsequenced"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e6) }

// Table is the divergence table: one row per mode and writer count.
func (r *Result) Table() *report.Table {
	t := report.NewTable("mode", "writers", "rounds", "keys_differ", "keys_missing", "set_errors", "dcs_down", "set_p50_ms", "set_p99_ms")
	for _, row := range r.Rows {
		t.Add(mode(row.Sequenced), row.Writers, row.Rounds, row.Differ, row.Missing, row.Errors, row.DCsDown, ms(row.P50), ms(row.P99))
	}
	return t
}

// LoadTable is the closed-loop write phase of each mode, with the ratio
// to the unsequenced run of the same invocation.
func (r *Result) LoadTable() *report.Table {
	t := report.NewTable("mode", "clients", "sets", "errors", "set_per_s", "p50_ms", "p99_ms", "throughput_vs_unsequenced", "p99_vs_unsequenced")
	var base *LoadRow
	for i := range r.Load {
		if !r.Load[i].Sequenced {
			base = &r.Load[i]
		}
	}
	for _, l := range r.Load {
		tr, pr := "", ""
		if base != nil && base.OpsPerS > 0 && base.P99 > 0 {
			tr = fmt.Sprintf("%.2f", l.OpsPerS/base.OpsPerS)
			pr = fmt.Sprintf("%.2f", float64(l.P99)/float64(base.P99))
		}
		t.Add(mode(l.Sequenced), l.Clients, l.Ops, l.Errors, fmt.Sprintf("%.0f", l.OpsPerS), ms(l.P50), ms(l.P99), tr, pr)
	}
	return t
}

// WriteFiles writes race.csv, race.png (keys that differ, per mode and
// writer count) and, with a load phase, race-load.csv into dir.
func (r *Result) WriteFiles(dir string) ([]string, error) {
	var files []string
	p := filepath.Join(dir, "race.csv")
	if err := r.Table().WriteCSV(p); err != nil {
		return files, err
	}
	files = append(files, p)
	if len(r.Rows) > 0 {
		bp := report.BarPlot{Title: "Keys whose value differs between DCs", YLabel: "keys"}
		for _, row := range r.Rows {
			lbl := "off"
			if row.Sequenced {
				lbl = "seq"
			}
			bp.Labels = append(bp.Labels, fmt.Sprintf("%s W=%d", lbl, row.Writers))
			bp.Values = append(bp.Values, float64(row.Differ))
		}
		p = filepath.Join(dir, "race.png")
		if err := bp.Save(p); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	if len(r.Load) > 0 {
		p = filepath.Join(dir, "race-load.csv")
		if err := r.LoadTable().WriteCSV(p); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	return files, nil
}
