//go:build linux

package scenario

import "fmt"

// Acked returns every acknowledged write id and its ack time (ns after
// Start), writer by writer. While the workload runs it is a snapshot:
// every write acknowledged before the call is in it.
func (w *Workload) Acked() (ids []uint64, times []int64) {
	for _, st := range w.writers {
		st.mu.Lock()
		ids = append(ids, st.ids...)
		times = append(times, st.times...)
		st.mu.Unlock()
	}
	return ids, times
}

// ReadTimes returns the completion times (ns after Start) of successful
// reads. Call after Stop.
func (w *Workload) ReadTimes() []int64 {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	return append([]int64(nil), w.reads...)
}

// Bin is one second of the run.
type Bin struct {
	Second                          int
	Writes, Reads, Errors           int64
	WriteReconnects, ReadReconnects int64
	WriteResets, ReadResets, Stale  int64
	ReadsByDC                       []int64 // by WorkloadConfig.DCs, then unknown
}

// Bins returns the per-second counts from second 0 to upto (exclusive).
func (w *Workload) Bins(upto int) []Bin {
	upto = min(upto, len(w.bins))
	out := make([]Bin, upto)
	for s := range upto {
		b := w.bins[s]
		out[s] = Bin{
			Second: s, Writes: b[colWrites].Load(), Reads: b[colReads].Load(), Errors: b[colErrors].Load(),
			WriteReconnects: b[colWriteReconnects].Load(), ReadReconnects: b[colReadReconnects].Load(),
			WriteResets: b[colWriteResets].Load(), ReadResets: b[colReadResets].Load(), Stale: b[colStale].Load(),
		}
		for i := colDCBase; i < w.ncol; i++ {
			out[s].ReadsByDC = append(out[s].ReadsByDC, b[i].Load())
		}
	}
	return out
}

// Totals sums Bins over the whole run.
func (w *Workload) Totals() Bin {
	var t Bin
	t.ReadsByDC = make([]int64, w.ncol-colDCBase)
	for _, b := range w.Bins(len(w.bins)) {
		t.Writes += b.Writes
		t.Reads += b.Reads
		t.Errors += b.Errors
		t.WriteReconnects += b.WriteReconnects
		t.ReadReconnects += b.ReadReconnects
		t.WriteResets += b.WriteResets
		t.ReadResets += b.ReadResets
		t.Stale += b.Stale
		for i, v := range b.ReadsByDC {
			t.ReadsByDC[i] += v
		}
	}
	return t
}

// ProgressLine formats second s for the progress display.
func (w *Workload) ProgressLine(s int, note string) string {
	bs := w.Bins(s + 1)
	if s >= len(bs) {
		return ""
	}
	b := bs[s]
	line := fmt.Sprintf("t=%3ds  writes acked %6d/s  reads %6d/s", s+1, b.Writes, b.Reads)
	for i, d := range w.cfg.DCs {
		line += fmt.Sprintf(" %s %d", d, b.ReadsByDC[i])
	}
	line += fmt.Sprintf("  errors %d  reconnects w%d r%d  resets w%d r%d", b.Errors,
		b.WriteReconnects, b.ReadReconnects, b.WriteResets, b.ReadResets)
	if b.Stale > 0 {
		line += fmt.Sprintf("  STALE %d", b.Stale)
	}
	if note != "" {
		line += "  " + note
	}
	return line
}
