//go:build linux

package rejoin

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/sdnkvs/sdnkvs/bench/report"
)

// Table is the summary: one row per case, catch-up and latency next to
// the steady-state baseline of the same run.
func (r *Result) Table() *report.Table {
	t := report.NewTable("case", "cut", "loaded", "catch-up s", "1st pass s", "keys copied", "MB copied", "keys/s", "MB/s", "x link",
		"copy s", "copy keys/s", "copy MB/s", "copy x link", "write p50/p99 ms before", "during", "after", "p99 during/before", "paused s", "src busy/sndbuf/rwnd s", "drops")
	for _, w := range r.Rows {
		ratio := 0.0
		if w.BeforeP99 > 0 {
			ratio = w.DuringP99 / w.BeforeP99
		}
		t.Add(w.Case.String(), w.DC, w.Loaded, fmt.Sprintf("%.2f", w.CatchupS), fmt.Sprintf("%.2f", w.FirstPassS), w.KeysCopied,
			fmt.Sprintf("%.1f", float64(w.BytesCopied)/1e6), fmt.Sprintf("%.0f", w.KeysPerS), fmt.Sprintf("%.2f", w.MBPerS), fmt.Sprintf("%.2f", w.LinkRatio),
			fmt.Sprintf("%.2f", w.CopyS), fmt.Sprintf("%.0f", w.CopyKeysPerS), fmt.Sprintf("%.2f", w.CopyMBPerS), fmt.Sprintf("%.2f", w.CopyLinkRatio),
			fmt.Sprintf("%.1f/%.1f", w.BeforeP50, w.BeforeP99), fmt.Sprintf("%.1f/%.1f", w.DuringP50, w.DuringP99),
			fmt.Sprintf("%.1f/%.1f", w.AfterP50, w.AfterP99), fmt.Sprintf("%.2f", ratio), paused(w.PausedS), served(w.ServedS), drops(w))
	}
	return t
}

// paused renders a PausedS ("-" when unknown).
func paused(s float64) string {
	if s < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", s)
}

// served renders a ServedS ("-" when unknown).
func served(s [3]float64) string {
	if s[0] < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f/%.1f/%.1f", s[0], s[1], s[2])
}

// drops renders a row's drop total ("-" when unknown).
func drops(w Row) string {
	if !w.DropsKnown {
		return "-"
	}
	return fmt.Sprint(w.Drops.Total())
}

// dropField is one drop count for the CSV (-1 when unknown).
func dropField(w Row, n int64) int64 {
	if !w.DropsKnown {
		return -1
	}
	return n
}

// Print writes the header, the table and the timeline.
func (r *Result) Print(w io.Writer) {
	bufs := "kernel"
	if r.TCPBuffers > 0 {
		bufs = fmt.Sprintf("%dMiB", r.TCPBuffers>>20)
	}
	fmt.Fprintf(w, "\n== sdnkvs bench rejoin: %s (%v) and %s (%v), link %.0f Mbit/s, %d nodes each, --catchup-rate %q, --tcp-buffers %s ==\n",
		r.Near, r.DelayNear, r.Far, r.DelayFar, float64(r.LinkRateBPS)/1e6, r.Nodes, r.CatchupRate, bufs)
	r.Table().Fprint(w)
	fmt.Fprintln(w, "catch-up s: heal to live (/dcs); 1st pass s: heal to the first completed pass; keys, MB: what the catch-up passes reported;")
	fmt.Fprintln(w, "keys/s, MB/s, x link (bit rate / link rate): over heal to live; copy s: time passes were running (not the waits between them), copy rates over it;")
	fmt.Fprintln(w, "write latency: a closed-loop SET through the forked port, before the cut (baseline), joining..live, live..+after;")
	fmt.Fprintln(w, "paused s: time the cut DC's catch-up drivers paused between batches to stay under --catchup-target (nodes' INFO);")
	fmt.Fprintln(w, "src busy/sndbuf/rwnd s: the source DC's TCP_INFO of the streams it served: time with data in flight, and of it held back by its send buffers / the driver's receive window;")
	fmt.Fprintln(w, "drops: packets the testbed dropped from heal to live (WAN emulator queue and loss, link interfaces, middlebox TUN; the log line splits them).")
	if len(r.Timeline) > 0 {
		fmt.Fprintln(w, "DC states (time from the start):")
		for _, s := range r.Timeline {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	for _, f := range r.Files {
		fmt.Fprintf(w, "wrote %s\n", f)
	}
}

// WriteFiles writes rejoin.csv (the table's numbers), rejoin-latency.csv
// (every probe write), rejoin-latency.png (probe latency over time) and
// rejoin-rate.png (catch-up rate per case) into dir.
func (r *Result) WriteFiles(dir string) ([]string, error) {
	t := report.NewTable("keys", "value_size", "cut_dc", "source_dc", "loaded", "load_s", "catchup_s", "pass_s", "first_pass_s", "keys_copied", "bytes_copied",
		"keys_per_s", "mb_per_s", "link_ratio", "copy_s", "copy_keys_per_s", "copy_mb_per_s", "copy_link_ratio", "before_p50_ms", "before_p99_ms", "during_p50_ms", "during_p99_ms",
		"after_p50_ms", "after_p99_ms", "before_n", "during_n", "after_n", "probe_errors", "paused_s",
		"served_busy_s", "served_sndbuf_limited_s", "served_rwnd_limited_s", "drops_queue", "drops_loss", "drops_link", "drops_tun")
	for _, w := range r.Rows {
		t.Add(w.Keys, w.ValueSize, w.DC, w.Source, w.Loaded, w.LoadS, w.CatchupS, w.PassS, w.FirstPassS, w.KeysCopied, w.BytesCopied, w.KeysPerS, w.MBPerS, w.LinkRatio,
			w.CopyS, w.CopyKeysPerS, w.CopyMBPerS, w.CopyLinkRatio,
			w.BeforeP50, w.BeforeP99, w.DuringP50, w.DuringP99, w.AfterP50, w.AfterP99, w.BeforeN, w.DuringN, w.AfterN, w.ProbeErrors, w.PausedS,
			w.ServedS[0], w.ServedS[1], w.ServedS[2], dropField(w, w.Drops.Queue), dropField(w, w.Drops.Loss), dropField(w, w.Drops.Link), dropField(w, w.Drops.TUN))
	}
	var files []string
	p := filepath.Join(dir, "rejoin.csv")
	if err := t.WriteCSV(p); err != nil {
		return nil, err
	}
	files = append(files, p)
	lt := report.NewTable("at_s", "latency_ms", "error")
	var xs, ys []float64
	for _, s := range r.Probe {
		lt.Add(s.At.Seconds(), ms(s.Latency), s.Err)
		if s.Err == "" {
			xs = append(xs, s.At.Seconds())
			ys = append(ys, ms(s.Latency))
		}
	}
	p = filepath.Join(dir, "rejoin-latency.csv")
	if err := lt.WriteCSV(p); err != nil {
		return files, err
	}
	files = append(files, p)
	if len(xs) > 0 {
		p = filepath.Join(dir, "rejoin-latency.png")
		lp := report.LinePlot{Title: "sdnkvs bench rejoin: forked write latency (closed loop)", XLabel: "time (s)", YLabel: "SET latency (ms)",
			Series: []report.Series{{Name: "probe SET", X: xs, Y: ys}}}
		if err := lp.Save(p); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	if len(r.Rows) > 0 {
		var labels []string
		var kps, ratio []float64
		for _, w := range r.Rows {
			labels = append(labels, w.Case.String())
			kps = append(kps, w.KeysPerS/1000)
			ratio = append(ratio, w.LinkRatio*100)
		}
		p = filepath.Join(dir, "rejoin-rate.png")
		gp := report.GroupedBarPlot{Title: "sdnkvs bench rejoin: catch-up rate per case", YLabel: "k keys/s | % of link rate",
			Labels: labels, Bars: []report.Bars{{Name: "k keys/s", Values: kps}, {Name: "% of link rate", Values: ratio}}}
		if err := gp.Save(p); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	return files, nil
}
