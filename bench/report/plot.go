package report

import (
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Series is one named line of a [LinePlot]: X[i] pairs with Y[i].
type Series struct {
	Name string
	X, Y []float64
}

// LinePlot describes a line chart of one or more series.
type LinePlot struct {
	Title, XLabel, YLabel string
	Series                []Series
	// Width and Height of the PNG; zero means 16cm x 10cm.
	Width, Height vg.Length
}

// Save draws the plot to a PNG file at path (directory created as needed).
func (lp LinePlot) Save(path string) error {
	if len(lp.Series) == 0 {
		return errors.New("line plot: no series")
	}
	p := plot.New()
	p.Title.Text = lp.Title
	p.X.Label.Text = lp.XLabel
	p.Y.Label.Text = lp.YLabel
	p.Add(plotter.NewGrid())
	for i, s := range lp.Series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("line plot: series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		pts := make(plotter.XYs, len(s.X))
		for j := range s.X {
			pts[j].X, pts[j].Y = s.X[j], s.Y[j]
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("line plot: series %q: %w", s.Name, err)
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		if s.Name != "" {
			p.Legend.Add(s.Name, l)
		}
	}
	p.Legend.Top = true
	return save(p, lp.Width, lp.Height, path)
}

// BarPlot describes a bar chart: one bar per label.
type BarPlot struct {
	Title, YLabel string
	Labels        []string
	Values        []float64
	// Width and Height of the PNG; zero means 16cm x 10cm.
	Width, Height vg.Length
}

// Save draws the bar chart to a PNG file at path.
func (bp BarPlot) Save(path string) error {
	if len(bp.Values) == 0 || len(bp.Values) != len(bp.Labels) {
		return fmt.Errorf("bar plot: %d labels for %d values", len(bp.Labels), len(bp.Values))
	}
	p := plot.New()
	p.Title.Text = bp.Title
	p.Y.Label.Text = bp.YLabel
	p.Add(plotter.NewGrid())
	bars, err := plotter.NewBarChart(plotter.Values(bp.Values), vg.Points(28))
	if err != nil {
		return fmt.Errorf("bar plot: %w", err)
	}
	bars.Color = color.RGBA{R: 60, G: 110, B: 180, A: 255}
	bars.LineStyle.Width = 0
	p.Add(bars)
	p.NominalX(bp.Labels...)
	p.Y.Min = 0
	return save(p, bp.Width, bp.Height, path)
}

// Bars is one named group member of a [GroupedBarPlot]: Values[i] is
// its bar at label i.
type Bars struct {
	Name   string
	Values []float64
}

// GroupedBarPlot describes a bar chart with one group of bars per label,
// one bar per [Bars] in each group, and a legend.
type GroupedBarPlot struct {
	Title, YLabel string
	Labels        []string
	Bars          []Bars
	// Width and Height of the PNG; zero means 16cm x 10cm.
	Width, Height vg.Length
}

// Save draws the grouped bar chart to a PNG file at path.
func (gp GroupedBarPlot) Save(path string) error {
	if len(gp.Bars) == 0 || len(gp.Labels) == 0 {
		return errors.New("grouped bar plot: no bars")
	}
	p := plot.New()
	p.Title.Text = gp.Title
	p.Y.Label.Text = gp.YLabel
	p.Add(plotter.NewGrid())
	w := vg.Points(14)
	for i, bs := range gp.Bars {
		if len(bs.Values) != len(gp.Labels) {
			return fmt.Errorf("grouped bar plot: %q has %d values for %d labels", bs.Name, len(bs.Values), len(gp.Labels))
		}
		b, err := plotter.NewBarChart(plotter.Values(bs.Values), w)
		if err != nil {
			return fmt.Errorf("grouped bar plot: %q: %w", bs.Name, err)
		}
		b.Color = plotutil.Color(i)
		b.LineStyle.Width = 0
		b.Offset = vg.Length(i-len(gp.Bars)/2) * w
		p.Add(b)
		p.Legend.Add(bs.Name, b)
	}
	p.NominalX(gp.Labels...)
	p.Legend.Top = true
	p.Y.Min = 0
	return save(p, gp.Width, gp.Height, path)
}

func save(p *plot.Plot, w, h vg.Length, path string) error {
	if w == 0 {
		w = 16 * vg.Centimeter
	}
	if h == 0 {
		h = 10 * vg.Centimeter
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return p.Save(w, h, path)
}
