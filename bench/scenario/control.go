//go:build linux

package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// DCState is one DC as the middlebox's /dcs reports it. Fields the
// middlebox adds later are ignored.
type DCState struct {
	Name string `json:"name"`
	Live bool   `json:"live"`
	// LifeInfo is the DC's lifecycle (docs/design-lifecycle.md); see
	// Lifecycle.
	LifeInfo
	Nodes []struct {
		Addr  string `json:"addr"`
		Live  bool   `json:"live"`
		Cause string `json:"cause"`
	} `json:"nodes"`
	Transitions []Transition `json:"transitions"`
}

// Transition is one failover decision the middlebox reports in /dcs.
type Transition struct {
	DC     string    `json:"-"` // filled in by Transitions
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	Node   string    `json:"node"`
	Signal string    `json:"signal"`
	Cause  string    `json:"cause"`
}

// Transitions returns every DC's recent transitions from /dcs, oldest
// first within each DC.
func (e *Env) Transitions() ([]Transition, error) {
	dcs, err := e.DCs()
	if err != nil {
		return nil, err
	}
	var out []Transition
	for _, d := range dcs {
		for _, t := range d.Transitions {
			t.DC = d.Name
			out = append(out, t)
		}
	}
	slices.SortStableFunc(out, func(a, b Transition) int { return a.At.Compare(b.At) })
	return out, nil
}

// CheckSettled watches /dcs for d and fails if any DC is not live at some
// point: the demo must not start on a system that already lost a DC (for
// example a detector that cannot reach the far DC in time).
func (e *Env) CheckSettled(ctx context.Context, d time.Duration) error {
	until := time.Now().Add(d)
	for {
		dcs, err := e.DCs()
		if err != nil {
			return err
		}
		for _, dc := range dcs {
			if !dc.Live {
				cause := ""
				for _, n := range dc.Nodes {
					if n.Cause != "" {
						cause = n.Cause
					}
				}
				return fmt.Errorf("demo: before any cut the middlebox reports DC %s down (%s); the failure detector misjudges this topology", dc.Name, cause)
			}
		}
		if time.Now().After(until) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DCs fetches the middlebox's /dcs.
func (e *Env) DCs() ([]DCState, error) {
	raw, err := e.Control("/dcs")
	if err != nil {
		return nil, err
	}
	var out []DCState
	if err := json.Unmarshal(raw, &out); err != nil {
		// Tolerate an object wrapping the list ({"dcs": [...]}).
		var wrap struct {
			DCs []DCState `json:"dcs"`
		}
		if err2 := json.Unmarshal(raw, &wrap); err2 != nil || wrap.DCs == nil {
			return nil, fmt.Errorf("demo: /dcs: %w", err)
		}
		out = wrap.DCs
	}
	return out, nil
}

// DCLive reports whether the middlebox considers DC dc live.
func (e *Env) DCLive(dc string) (bool, error) {
	dcs, err := e.DCs()
	if err != nil {
		return false, err
	}
	for _, d := range dcs {
		if d.Name == dc {
			return d.Live, nil
		}
	}
	return false, fmt.Errorf("demo: /dcs has no DC %q", dc)
}

// WaitDCLive polls /dcs until DC dc's liveness is live, or ctx ends.
func (e *Env) WaitDCLive(ctx context.Context, dc string, live bool) error {
	var last error
	for {
		got, err := e.DCLive(dc)
		if err == nil && got == live {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: waiting for DC %s live=%v: %w (last error: %v)", dc, live, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Control GETs path from the middlebox's control API.
func (e *Env) Control(path string) ([]byte, error) {
	c := testbed.HTTPClient(e.TB.NS("gw"), 2*time.Second)
	resp, err := c.Get("http://" + ControlAddr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("demo: GET %s: %s: %s", path, resp.Status, b)
	}
	return b, nil
}

// Metric returns the sum of the Prometheus samples named name (any
// labels) in the middlebox's /metrics, and whether any was found.
func (e *Env) Metric(name string) (float64, bool, error) {
	raw, err := e.Control("/metrics")
	if err != nil {
		return 0, false, err
	}
	return sumMetric(raw, name)
}

// sumMetric sums the samples of metric name in Prometheus text format.
func sumMetric(raw []byte, name string) (float64, bool, error) {
	var sum float64
	found := false
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		if len(line) == 0 || line[0] == '#' || len(line) < len(name) || string(line[:len(name)]) != name {
			continue
		}
		rest := line[len(name):]
		if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		j := bytes.LastIndexByte(rest, ' ')
		if j < 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(rest[j+1:]), 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric %s: %q: %w", name, line, err)
		}
		sum += v
		found = true
	}
	return sum, found, nil
}
