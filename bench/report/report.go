// Package report holds the small output helpers every benchmark shares: an
// aligned text table, CSV files and gonum PNG plots (line and bar).
//
// A benchmark fills one [Table] and then prints it, writes it as CSV and,
// when it has something to plot, draws a [LinePlot] or a [BarPlot] next to
// it. None of the types here are safe for concurrent use.
package report

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Table is a header and rows of already formatted cells.
type Table struct {
	Header []string
	Rows   [][]string
}

// NewTable returns an empty table with the given column names.
func NewTable(header ...string) *Table { return &Table{Header: header} }

// Add appends one row; each cell is formatted with [Cell].
func (t *Table) Add(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = Cell(c)
	}
	t.Rows = append(t.Rows, row)
}

// Cell formats one value for a table or CSV: floats with up to 3 decimals
// (trailing zeros kept so columns align), everything else with fmt's %v.
func Cell(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', 3, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', 3, 32)
	default:
		return fmt.Sprint(v)
	}
}

// Fprint writes the table to w with columns padded to their widest cell.
func (t *Table) Fprint(w io.Writer) error {
	widths := make([]int, len(t.Header))
	grow := func(row []string) {
		for i, c := range row {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(c))
		}
	}
	grow(t.Header)
	for _, r := range t.Rows {
		grow(r)
	}
	var b strings.Builder
	line := func(row []string) {
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			if i == len(row)-1 {
				b.WriteString(c)
			} else {
				fmt.Fprintf(&b, "%-*s", widths[i], c)
			}
		}
		b.WriteByte('\n')
	}
	line(t.Header)
	sep := make([]string, len(widths))
	for i, w := range widths {
		sep[i] = strings.Repeat("-", w)
	}
	line(sep)
	for _, r := range t.Rows {
		line(r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// String returns the table as [Table.Fprint] prints it.
func (t *Table) String() string {
	var b strings.Builder
	_ = t.Fprint(&b)
	return b.String()
}

// WriteCSV writes the header and rows to path, creating its directory.
func (t *Table) WriteCSV(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if err := w.Write(t.Header); err != nil {
		f.Close()
		return err
	}
	if err := w.WriteAll(t.Rows); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadCSV reads a file written by [Table.WriteCSV] back into a table.
func ReadCSV(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("read %s: empty CSV", path)
	}
	return &Table{Header: recs[0], Rows: recs[1:]}, nil
}
