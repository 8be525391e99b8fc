//go:build linux

package testbed

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseRate parses a link rate in bits per second: a number with an
// optional k/m/g prefix and "bit" or "bit/s" suffix ("100mbit", "1gbit",
// "2.5Mbit/s", "800000"). "0" and "" mean unlimited. Byte-based units such
// as tc's "mbps" are refused as ambiguous.
func ParseRate(s string) (uint64, error) {
	in := s
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" || s == "0" {
		return 0, nil
	}
	s = strings.TrimSuffix(s, "/s")
	if strings.HasSuffix(s, "bps") || strings.HasSuffix(s, "b/s") || strings.HasSuffix(s, "byte") {
		return 0, fmt.Errorf("rate %q: use bits, e.g. 100mbit", in)
	}
	s = strings.TrimSuffix(s, "bit")
	mult := 1.0
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k':
			mult, s = 1e3, s[:n-1]
		case 'm':
			mult, s = 1e6, s[:n-1]
		case 'g':
			mult, s = 1e9, s[:n-1]
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v*mult > 1e12 {
		return 0, fmt.Errorf("rate %q: want e.g. 100mbit, 1gbit, 500kbit", in)
	}
	return uint64(v * mult), nil
}

// ParseLoss parses a loss probability: "0.01" or "1%".
func ParseLoss(s string) (float64, error) {
	in := s
	s = strings.TrimSpace(s)
	div := 1.0
	if strings.HasSuffix(s, "%") {
		s, div = strings.TrimSuffix(s, "%"), 100
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v/div < 0 || v/div >= 1 {
		return 0, fmt.Errorf("loss %q: want a probability in [0,1) or a percentage, e.g. 0.01 or 1%%", in)
	}
	return v / div, nil
}

// ParsePerDC parses a per-DC setting: either one value for every DC
// ("100mbit") or a comma-separated list of dc=value pairs
// ("sydney=5ms,dublin=170ms"); DCs not listed get zero. Names must be in dcs.
func ParsePerDC[T any](s string, dcs []string, parse func(string) (T, error)) (map[string]T, error) {
	out := map[string]T{}
	s = strings.TrimSpace(s)
	if s == "" {
		return out, nil
	}
	if !strings.Contains(s, "=") {
		v, err := parse(s)
		if err != nil {
			return nil, err
		}
		for _, d := range dcs {
			out[d] = v
		}
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("%q: want dc=value pairs separated by commas", s)
		}
		known := false
		for _, d := range dcs {
			known = known || d == name
		}
		if !known {
			return nil, fmt.Errorf("%q: unknown DC %q (DCs: %s)", s, name, strings.Join(dcs, ","))
		}
		v, err := parse(val)
		if err != nil {
			return nil, fmt.Errorf("DC %s: %w", name, err)
		}
		out[name] = v
	}
	return out, nil
}

// ParseDelay parses a one-way delay such as "5ms" or "170ms".
func ParseDelay(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("delay %q: want a duration such as 5ms", s)
	}
	return d, nil
}

// Spec is the textual form of a [Config] used by the CLI flags.
type Spec struct {
	Name  string // run id, may be empty
	DCs   string // "sydney,dublin" in preference order
	Nodes int    // nodes per DC
	Delay string // "sydney=5ms,dublin=170ms" or "5ms"
	Rate  string // "100mbit" or per DC
	Loss  string // "0.01" or per DC
	Queue string // bytes per direction, "" for the default; or per DC
	// TCPBuffers is DC.TCPBuffers for every DC: a size, "kernel", or ""
	// for the default.
	TCPBuffers string
}

// Config turns the textual spec into a Config, with errors naming the flag.
func (s Spec) Config() (Config, error) {
	var names []string
	for _, n := range strings.Split(s.DCs, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return Config{}, fmt.Errorf("--dc: list at least one DC name, e.g. sydney,dublin")
	}
	delays, err := ParsePerDC(s.Delay, names, ParseDelay)
	if err != nil {
		return Config{}, fmt.Errorf("--delay: %w", err)
	}
	rates, err := ParsePerDC(s.Rate, names, ParseRate)
	if err != nil {
		return Config{}, fmt.Errorf("--rate: %w", err)
	}
	losses, err := ParsePerDC(s.Loss, names, ParseLoss)
	if err != nil {
		return Config{}, fmt.Errorf("--loss: %w", err)
	}
	queues, err := ParsePerDC(s.Queue, names, func(v string) (int, error) {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return 0, fmt.Errorf("queue %q: want a byte count", v)
		}
		return n, nil
	})
	if err != nil {
		return Config{}, fmt.Errorf("--queue: %w", err)
	}
	bufs, err := ParseTCPBuffers(s.TCPBuffers)
	if err != nil {
		return Config{}, fmt.Errorf("--tcp-buffers: %w", err)
	}
	if s.Nodes < 0 || s.Nodes > MaxNodes {
		return Config{}, fmt.Errorf("--nodes: %d: want 1..%d", s.Nodes, MaxNodes)
	}
	cfg := Config{Name: s.Name}
	for _, n := range names {
		cfg.DCs = append(cfg.DCs, DC{Name: n, Nodes: s.Nodes, Delay: delays[n], Rate: rates[n], Loss: losses[n], QueueBytes: queues[n], TCPBuffers: bufs})
	}
	c, err := cfg.WithDefaults()
	if err != nil {
		return Config{}, err
	}
	c.Name = s.Name // keep empty names empty: Up generates one
	return c, nil
}

// ParseBytes parses a byte count: a whole number with an optional k/K/KiB
// or m/M/MiB suffix (powers of 1024), at most 1 GiB. "" is 0.
func ParseBytes(s string) (int, error) {
	in := s
	s = strings.TrimSuffix(strings.TrimSpace(s), "iB")
	mult := 1
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult, s = 1<<10, s[:n-1]
		case 'm', 'M':
			mult, s = 1<<20, s[:n-1]
		}
	}
	if s == "" && in == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || v > (1<<30)/mult {
		return 0, fmt.Errorf("size %q: want e.g. 262144, 256k or 1m (at most 1 GiB)", in)
	}
	return v * mult, nil
}

// ParseTCPBuffers parses --tcp-buffers: a size for DC.TCPBuffers, or
// "kernel" (-1: the kernel's defaults); "" is 0 (the default).
func ParseTCPBuffers(s string) (int, error) {
	if strings.TrimSpace(s) == "kernel" {
		return -1, nil
	}
	n, err := ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("%w, or kernel", err)
	}
	return n, nil
}

// ParseIperfJSON returns the receiver's bits/s from `iperf3 -J` output of a
// TCP test (end.sum_received.bits_per_second).
func ParseIperfJSON(out []byte) (float64, error) {
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3 JSON: no end.sum_received.bits_per_second")
	}
	return r.End.SumReceived.BitsPerSecond, nil
}
