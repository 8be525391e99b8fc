//go:build linux

package failoverbench

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/report"
)

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// Table is the side-by-side summary of the detector runs (seconds from
// the cut; -1: did not happen).
func (r *Result) Table() *report.Table {
	t := report.NewTable("detector", "client_rto_min", "cut_at_s", "detected_s", "dc_down_s", "conn_lost_s", "rto_s", "rto_full_s",
		"first_reply_s", "near_rtt_ms", "far_rtt_ms", "resets", "reconnects", "middlebox_rsts")
	for _, d := range r.Runs {
		t.Add(d.Detector, rtoMinString(r.ClientRTOMin), fmt.Sprintf("%.2f", d.CutAt.Seconds()),
			fmt.Sprintf("%.2f", secs(d.NodeDown)), fmt.Sprintf("%.2f", secs(d.DCDown)), fmt.Sprintf("%.2f", secs(d.ConnLost)),
			fmt.Sprintf("%.2f", secs(d.RTO)), fmt.Sprintf("%.2f", secs(d.RTOFull)), fmt.Sprintf("%.2f", secs(d.FirstReply)),
			fmt.Sprintf("%.1f", ms(d.NearRTT)), fmt.Sprintf("%.1f", ms(d.FarRTT)), d.Resets, d.Reconnects, fmt.Sprintf("%.0f", d.MiddleboxRS))
	}
	return t
}

func rtoMinString(d time.Duration) string {
	if d <= 0 {
		return "default"
	}
	return d.String()
}

// CutsTable summarizes the repeated cuts.
func (r *Result) CutsTable() *report.Table {
	t := report.NewTable("cut", "at_s", "rto_write_s", "readmitted_after_s", "write_resets")
	for _, c := range r.Cuts {
		t.Add(c.N, fmt.Sprintf("%.2f", c.At.Seconds()), fmt.Sprintf("%.2f", secs(c.RTOWrite)), fmt.Sprintf("%.2f", secs(c.Readmitted)), c.WriteResets)
	}
	return t
}

func secs(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return d.Seconds()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Print writes the tables.
func (r *Result) Print(out io.Writer) {
	w := &bytes.Buffer{}
	defer func() { out.Write(w.Bytes()) }()
	if len(r.Runs) > 0 {
		pings := "no PINGs"
		if r.PingEvery > 0 {
			pings = fmt.Sprintf("PING every %v", r.PingEvery)
		}
		fmt.Fprintf(w, "\n== Fig. 6: anycast reads across a cut of the near DC (client rto_min %s, %s) ==\n", rtoMinString(r.ClientRTOMin), pings)
		fmt.Fprintln(w, "   seconds from the cut (-1: never): detected = first near node down at the middlebox, conn_lost = the reader's connection reset,")
		fmt.Fprintln(w, "   rto = first reply byte from the far DC (service resumed), rto_full = first complete value from the far DC")
		r.Table().Fprint(w)
	}
	if len(r.Cuts) > 0 {
		fmt.Fprintf(w, "\n== %d cuts under forked write load (detector fast) ==\n", len(r.Cuts))
		r.CutsTable().Fprint(w)
		fmt.Fprintf(w, "RPO: %d acknowledged writes lost of %d\n", r.RPOLost, r.AckedWrites)
	}
	for _, f := range r.Files {
		fmt.Fprintf(w, "wrote %s\n", f)
	}
}

// writeFiles writes the samples, throughput per 100 ms, the summary and
// the cuts as CSV, and the RTT and throughput plots as PNG.
func writeFiles(dir string, r *Result) ([]string, error) {
	var files []string
	samples := report.NewTable("detector", "kind", "conn", "sent_s", "first_byte_s", "done_s", "rtt_ms", "dc", "bytes")
	thr := report.NewTable("detector", "t_s", "replies_per_s", "value_mbit_per_s", "rx_mbit_per_s")
	var rttSeries, thrSeries []report.Series
	for _, d := range r.Runs {
		// One MGET RTT line per (detector, answering DC), so the outage
		// is a gap.
		var byDC []report.Series
		idx := map[string]int{}
		bins := make([]float64, len(d.RxBins))
		vbytes := make([]float64, len(bins))
		for _, s := range d.Samples {
			samples.Add(d.Detector, s.Kind, s.Conn, fmt.Sprintf("%.4f", s.Sent.Seconds()), fmt.Sprintf("%.4f", s.First.Seconds()),
				fmt.Sprintf("%.4f", s.Done.Seconds()), fmt.Sprintf("%.2f", ms(s.RTT())), s.DC, s.Bytes)
			if s.Kind != KindMGET {
				continue
			}
			i, ok := idx[s.DC]
			if !ok {
				i = len(byDC)
				idx[s.DC] = i
				byDC = append(byDC, report.Series{Name: fmt.Sprintf("detector %s, %s", d.Detector, s.DC)})
			}
			byDC[i].X = append(byDC[i].X, s.Done.Seconds())
			byDC[i].Y = append(byDC[i].Y, ms(s.RTT()))
			if b := int(s.Done / binWidth); b < len(bins) {
				bins[b]++
				vbytes[b] += float64(s.Bytes)
			}
		}
		ts := report.Series{Name: "detector " + d.Detector}
		perSec := float64(time.Second / binWidth)
		for i, rx := range d.RxBins {
			t := float64(i) * binWidth.Seconds()
			rxMbps := float64(rx) * 8 * perSec / 1e6
			thr.Add(d.Detector, fmt.Sprintf("%.1f", t), bins[i]*perSec, fmt.Sprintf("%.2f", vbytes[i]*8*perSec/1e6), fmt.Sprintf("%.2f", rxMbps))
			ts.X = append(ts.X, t)
			ts.Y = append(ts.Y, rxMbps)
		}
		rttSeries = append(rttSeries, byDC...)
		thrSeries = append(thrSeries, ts)
	}
	// The cut as a vertical line (every run cuts at the same time).
	if len(r.Runs) > 0 && r.Runs[0].CutAt > 0 {
		cut := r.Runs[0].CutAt.Seconds()
		vline := func(ss []report.Series) []report.Series {
			top := 0.0
			for _, s := range ss {
				for _, y := range s.Y {
					top = max(top, y)
				}
			}
			return append(ss, report.Series{Name: "cut", X: []float64{cut, cut}, Y: []float64{0, top}})
		}
		rttSeries, thrSeries = vline(rttSeries), vline(thrSeries)
	}
	save := func(name string, t *report.Table) error {
		p := filepath.Join(dir, name)
		if err := t.WriteCSV(p); err != nil {
			return err
		}
		files = append(files, p)
		return nil
	}
	if len(r.Runs) > 0 {
		if err := save("failover-rtt.csv", samples); err != nil {
			return files, err
		}
		if err := save("failover-throughput.csv", thr); err != nil {
			return files, err
		}
		if err := save("failover-summary.csv", r.Table()); err != nil {
			return files, err
		}
		if len(rttSeries) > 0 {
			p := filepath.Join(dir, "failover-rtt.png")
			if err := (report.LinePlot{Title: "Anycast MGET RTT across a cut of the near DC", XLabel: "time (s)", YLabel: "RTT (ms)", Series: rttSeries}).Save(p); err != nil {
				return files, err
			}
			files = append(files, p)
		}
		p := filepath.Join(dir, "failover-throughput.png")
		if err := (report.LinePlot{Title: "Anycast throughput across a cut of the near DC", XLabel: "time (s)", YLabel: "received, Mbit/s (100 ms bins)", Series: thrSeries}).Save(p); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	if len(r.Cuts) > 0 {
		if err := save("failover-cuts.csv", r.CutsTable()); err != nil {
			return files, err
		}
	}
	return files, nil
}
