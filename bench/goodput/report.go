//go:build linux

package goodput

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sdnkvs/sdnkvs/bench/report"
)

// Summary is one row of the summary table.
type Summary struct {
	Kind string // "direct", "direct-nosack" or "forked"
	N    int
	// PerServer is the steady goodput each server sees (Mbit/s);
	// Cumulated is N x PerServer.
	PerServer, Cumulated float64
	// LinkRatio is Cumulated / (N x link rate); 0 without a link rate.
	LinkRatio float64
	// DirectRatio is PerServer / the direct baseline's goodput; 0 without
	// a baseline.
	DirectRatio float64
	// ParallelRatio is Cumulated / the cumulated goodput of N parallel
	// direct streams of the same run (forked rows; 0 without one).
	ParallelRatio float64
	// ClientAcked is the goodput from the client's acknowledged bytes.
	ClientAcked float64
	// Complete: every server received every byte sent.
	Complete bool
	// Drops: packets the links dropped during the stream (-1: unknown).
	Drops   int64
	SentMiB float64
}

// Summarize turns results into table rows. rate is the link rate in bit/s
// (0: unlimited).
func Summarize(rs []Result, rate uint64) []Summary {
	var direct float64
	par := map[int]float64{}
	for _, r := range rs {
		switch r.Kind {
		case "direct":
			direct = r.Mbps
		case "direct-parallel":
			par[r.N] = float64(r.N) * r.Mbps
		}
	}
	out := make([]Summary, 0, len(rs))
	for _, r := range rs {
		s := Summary{
			Kind: r.Kind, N: r.N, PerServer: r.Mbps, Cumulated: float64(r.N) * r.Mbps,
			ClientAcked: r.ClientMbps, Complete: r.Complete(), SentMiB: float64(r.Sent) / (1 << 20), Drops: r.Drops,
		}
		if rate > 0 {
			s.LinkRatio = s.Cumulated / (float64(r.N) * float64(rate) / 1e6)
		}
		if direct > 0 {
			s.DirectRatio = s.PerServer / direct
		}
		if p := par[r.N]; p > 0 && r.Kind == "forked" {
			s.ParallelRatio = s.Cumulated / p
		}
		out = append(out, s)
	}
	return out
}

func ratio(v float64) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// Table returns the summary table.
func Table(sum []Summary) *report.Table {
	t := report.NewTable("kind", "N", "per-server Mbit/s", "cumulated Mbit/s", "cumulated / (N x link)",
		"per-server / direct", "cumulated / N direct streams", "client-acked Mbit/s", "sent MiB", "link drops", "all servers got every byte")
	for _, s := range sum {
		t.Add(s.Kind, s.N, s.PerServer, s.Cumulated, ratio(s.LinkRatio), ratio(s.DirectRatio), ratio(s.ParallelRatio),
			s.ClientAcked, s.SentMiB, s.Drops, s.Complete)
	}
	return t
}

// Report prints the summary table to w and writes goodput-summary.csv,
// goodput.csv (every sample), goodput.png (cumulated goodput over time per
// N, and the direct baseline) and goodput-summary.png (cumulated goodput
// against N) into dir. rate is the link rate in bit/s
// (0: unlimited), for the ratio column.
func Report(w io.Writer, rs []Result, rate uint64, dir string) error {
	sum := Summarize(rs, rate)
	t := Table(sum)
	if err := t.Fprint(w); err != nil {
		return err
	}
	if err := t.WriteCSV(filepath.Join(dir, "goodput-summary.csv")); err != nil {
		return err
	}
	raw := report.NewTable("kind", "n", "t_s", "min_server_bytes", "client_acked_bytes",
		"per_server_mbit_s", "cumulated_mbit_s", "server_bytes")
	lp := report.LinePlot{
		Title:  "Goodput of one client forked to N servers (Fig. 7)",
		XLabel: "time (s)", YLabel: "cumulated goodput (Mbit/s)",
	}
	for _, r := range rs {
		name := fmt.Sprintf("N=%d", r.N)
		switch r.Kind {
		case "direct":
			name = "direct (no middlebox)"
		case "direct-nosack":
			name = "direct, no SACK/TS"
		case "direct-parallel":
			name = fmt.Sprintf("%d direct streams", r.N)
		}
		ser := report.Series{Name: name}
		for i, s := range r.Samples {
			per := 0.0
			if i > 0 {
				if dt := (s.T - r.Samples[i-1].T).Seconds(); dt > 0 {
					per = float64(s.Min()-r.Samples[i-1].Min()) * 8 / dt / 1e6
				}
				ser.X = append(ser.X, s.T.Seconds())
				ser.Y = append(ser.Y, per*float64(r.N))
			}
			bs := make([]string, len(s.Servers))
			for j, v := range s.Servers {
				bs[j] = strconv.FormatInt(v, 10)
			}
			raw.Add(r.Kind, r.N, s.T.Seconds(), s.Min(), s.ClientAcked, per, per*float64(r.N), strings.Join(bs, " "))
		}
		if len(ser.X) > 0 && r.Kind != "direct-parallel" {
			lp.Series = append(lp.Series, ser)
		}
	}
	if err := raw.WriteCSV(filepath.Join(dir, "goodput.csv")); err != nil {
		return err
	}
	if len(lp.Series) == 0 {
		return nil
	}
	if err := lp.Save(filepath.Join(dir, "goodput.png")); err != nil {
		return err
	}
	if sp := summaryPlot(sum, rate); len(sp.Series) > 0 {
		return sp.Save(filepath.Join(dir, "goodput-summary.png"))
	}
	return nil
}

// summaryPlot draws cumulated goodput against N: the forked connection,
// N parallel direct streams, and the ideal (N x link rate, or N x the
// direct baseline without a rate).
func summaryPlot(sum []Summary, rate uint64) report.LinePlot {
	var forked, par, ideal report.Series
	forked.Name, par.Name = "one connection forked to N servers", "N direct streams (no middlebox)"
	ideal.Name = "N x link rate"
	unit := float64(rate) / 1e6
	if rate == 0 {
		ideal.Name = "N x direct"
		for _, s := range sum {
			if s.Kind == "direct" {
				unit = s.PerServer
			}
		}
	}
	for _, s := range sum {
		switch s.Kind {
		case "forked":
			forked.X, forked.Y = append(forked.X, float64(s.N)), append(forked.Y, s.Cumulated)
			if unit > 0 {
				ideal.X, ideal.Y = append(ideal.X, float64(s.N)), append(ideal.Y, float64(s.N)*unit)
			}
		case "direct-parallel":
			par.X, par.Y = append(par.X, float64(s.N)), append(par.Y, s.Cumulated)
		}
	}
	lp := report.LinePlot{Title: "Cumulated goodput against the number of servers", XLabel: "servers (N)", YLabel: "cumulated goodput (Mbit/s)"}
	for _, s := range []report.Series{forked, par, ideal} {
		if len(s.X) > 0 {
			lp.Series = append(lp.Series, s)
		}
	}
	return lp
}
