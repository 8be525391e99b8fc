//go:build linux

// Package race measures whether concurrent forked writes leave the DCs in
// agreement: W clients, barrier-synchronised, each SET the same key through
// the middlebox's forked port in every round; then every key is read inside
// each DC (quorum reads from that DC's nodes) and the keys whose values
// differ between DCs are counted. With the sequencer every DC orders the
// writes by the middlebox's stamps; without it each DC's ABD picks its own
// winner (issue 8).
package race

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// Row is the outcome of one race: W writers, Rounds keys.
type Row struct {
	Sequenced bool
	Writers   int
	Rounds    int
	Differ    int    // keys whose value differs between DCs
	Missing   int    // keys absent in some DC
	Errors    int    // SETs not answered +OK (their writer reconnects)
	FirstErr  string // the first of them
	DCsDown   int    // DCs the middlebox reported down after the race
	P50, P99  time.Duration
	Samples   []string // a few differing keys with their values per DC
}

// Hook runs between rounds (after round r completed); redial asks for new
// client connections (the middlebox was restarted).
type Hook func(r int) (redial bool, err error)

// Race runs rounds rounds of writers barrier-synchronised SETs of
// "<prefix>:<r>" = "w<i>" through the forked port, then compares the DCs.
// A SET that fails is counted (Row.Errors) and its writer reconnects
// before the next round; the error returned is for the experiment itself
// (dialling, reading the DCs, ctx).
func (e *Env) Race(ctx context.Context, prefix string, writers, rounds int, hook Hook) (Row, error) {
	row := Row{Sequenced: e.Sequenced, Writers: writers, Rounds: rounds}
	clients, err := e.dialWriters(ctx, writers)
	if err != nil {
		return row, err
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	lat := make([]time.Duration, 0, writers*rounds)
	var mu sync.Mutex
	failed := make([]bool, writers)
	for r := range rounds {
		key := []byte(fmt.Sprintf("%s:%d", prefix, r))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				t0 := time.Now()
				rep, err := c.Do(cctx, []byte("SET"), key, []byte(fmt.Sprintf("w%d", i)))
				d := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				lat = append(lat, d)
				if err != nil || !rep.IsOK() {
					row.Errors++
					failed[i] = err != nil
					if row.FirstErr == "" {
						row.FirstErr = fmt.Sprintf("round %d writer %d: reply %c%s, err %v", r, i, rep.Kind, rep.Str, err)
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		if ctx.Err() != nil {
			return row, ctx.Err()
		}
		for i, f := range failed {
			if !f {
				continue
			}
			failed[i] = false
			clients[i].Close()
			conn, err := e.DialClient(ctx, scenario.WritePort)
			if err != nil {
				return row, fmt.Errorf("race: redial writer %d: %w", i, err)
			}
			clients[i] = resp.NewClient(conn)
		}
		if hook != nil {
			redial, err := hook(r)
			if err != nil {
				return row, err
			}
			if redial {
				for _, c := range clients {
					c.Close()
				}
				if clients, err = e.dialWriters(ctx, writers); err != nil {
					return row, err
				}
			}
		}
	}
	row.P50, row.P99 = quantile(lat, 0.5), quantile(lat, 0.99)
	keys := make([][]byte, rounds)
	for r := range rounds {
		keys[r] = []byte(fmt.Sprintf("%s:%d", prefix, r))
	}
	row.Differ, row.Missing, row.Samples, err = e.Compare(ctx, keys)
	if dcs, derr := e.DCs(); derr == nil {
		for _, d := range dcs {
			if !d.Live {
				row.DCsDown++
			}
		}
	}
	return row, err
}

func (e *Env) dialWriters(ctx context.Context, n int) ([]*resp.Client, error) {
	var out []*resp.Client
	for range n {
		conn, err := e.DialClient(ctx, scenario.WritePort)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, fmt.Errorf("race: dial the forked port: %w", err)
		}
		out = append(out, resp.NewClient(conn))
	}
	return out, nil
}

// Compare reads keys inside every DC (MGET, quorum reads from the DC's
// nodes) and counts keys whose values differ between DCs and keys absent
// in some DC.
func (e *Env) Compare(ctx context.Context, keys [][]byte) (differ, missing int, samples []string, err error) {
	dcs := e.Config().DCs
	vals := make([][]*string, len(dcs))
	for d, dc := range dcs {
		if vals[d], err = e.readDC(ctx, dc.Name, keys); err != nil {
			return 0, 0, nil, err
		}
	}
	for k := range keys {
		same, absent := true, false
		for d := range dcs {
			if vals[d][k] == nil {
				absent = true
			}
			if d > 0 && !eqPtr(vals[d][k], vals[0][k]) {
				same = false
			}
		}
		if absent {
			missing++
		}
		if !same {
			differ++
			if len(samples) < 5 {
				s := string(keys[k])
				for d, dc := range dcs {
					s += fmt.Sprintf(" %s=%s", dc.Name, strPtr(vals[d][k]))
				}
				samples = append(samples, s)
			}
		}
	}
	return differ, missing, samples, nil
}

func eqPtr(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func strPtr(s *string) string {
	if s == nil {
		return "(nil)"
	}
	return *s
}

// readDC reads keys from DC dc's first node (a quorum read in the DC).
func (e *Env) readDC(ctx context.Context, dc string, keys [][]byte) ([]*string, error) {
	c, err := e.DialDC(ctx, dc, 0)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := make([]*string, 0, len(keys))
	const batch = 200
	for i := 0; i < len(keys); i += batch {
		b := keys[i:min(len(keys), i+batch)]
		args := append([][]byte{[]byte("MGET")}, b...)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep, err := c.Do(cctx, args...)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("race: read %s: %w", dc, err)
		}
		if rep.Kind != '*' || len(rep.Elems) != len(b) {
			return nil, fmt.Errorf("race: read %s: reply %c%s with %d elements for %d keys", dc, rep.Kind, rep.Str, len(rep.Elems), len(b))
		}
		for _, el := range rep.Elems {
			if el.Nil {
				out = append(out, nil)
				continue
			}
			s := string(el.Str)
			out = append(out, &s)
		}
	}
	return out, nil
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// Config is a whole `sdnkvs bench race` run.
type Config struct {
	Bin     string
	DCs     []testbed.DC
	Writers []int
	Rounds  int
	// Modes are the sequenced settings to run, each in its own
	// environment (nodes run in a different mode); default off then on.
	Modes []bool
	// Load, when positive, adds a closed-loop write phase of this length
	// per mode with LoadClients connections (throughput and latency).
	Load        time.Duration
	LoadClients int
	MBExtra     []string
	Log         io.Writer
}

// LoadRow is the closed-loop write phase of one mode.
type LoadRow struct {
	Sequenced bool
	Clients   int
	Ops       int
	Errors    int
	OpsPerS   float64
	P50, P99  time.Duration
}

// Result is every race and load phase of a run.
type Result struct {
	Rows []Row
	Load []LoadRow
}

// DefaultDCs is the paper's topology: sydney 5 ms and dublin 170 ms one
// way, three nodes each.
func DefaultDCs() []testbed.DC {
	return []testbed.DC{{Name: "sydney", Nodes: 3, Delay: 5 * time.Millisecond}, {Name: "dublin", Nodes: 3, Delay: 170 * time.Millisecond}}
}

// Run runs every mode's races (and load phase) in fresh environments.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if len(cfg.DCs) == 0 {
		cfg.DCs = DefaultDCs()
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = []bool{false, true}
	}
	res := &Result{}
	for _, seq := range cfg.Modes {
		if err := runMode(ctx, cfg, seq, res); err != nil {
			return res, err
		}
	}
	return res, nil
}

func runMode(ctx context.Context, cfg Config, seq bool, res *Result) error {
	e, err := NewEnv(ctx, cfg.Bin, cfg.DCs, seq, cfg.MBExtra, cfg.Log)
	if err != nil {
		return err
	}
	defer e.Close()
	if err := e.StartMiddlebox(ctx); err != nil {
		return err
	}
	for _, w := range cfg.Writers {
		row, err := e.Race(ctx, fmt.Sprintf("race:w%d", w), w, cfg.Rounds, nil)
		res.Rows = append(res.Rows, row)
		fmt.Fprintf(cfg.Log, "sequenced=%v writers=%d: %d of %d keys differ, %d missing, %d errors, %d DCs down, p99 %v\n", seq, w, row.Differ, row.Rounds, row.Missing, row.Errors, row.DCsDown, row.P99)
		if row.FirstErr != "" {
			fmt.Fprintf(cfg.Log, "  first failed SET: %s\n", row.FirstErr)
		}
		if err != nil {
			return err
		}
	}
	if cfg.Load > 0 {
		lr, err := e.LoadPhase(ctx, cfg.LoadClients, cfg.Load)
		res.Load = append(res.Load, lr)
		fmt.Fprintf(cfg.Log, "sequenced=%v load: %d clients, %.0f SET/s, p50 %v, p99 %v, %d errors\n", seq, lr.Clients, lr.OpsPerS, lr.P50, lr.P99, lr.Errors)
		if err != nil {
			return err
		}
	}
	return nil
}

// LoadPhase runs clients closed-loop writers (SET load:<c>:<n>) through the
// forked port for d and reports throughput and latency.
func (e *Env) LoadPhase(ctx context.Context, clients int, d time.Duration) (LoadRow, error) {
	lr := LoadRow{Sequenced: e.Sequenced, Clients: clients}
	cs, err := e.dialWriters(ctx, clients)
	if err != nil {
		return lr, err
	}
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	t0 := time.Now()
	end := t0.Add(d)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			errs := 0
			val := []byte("v0123456789abcdef")
			for n := 0; time.Now().Before(end) && ctx.Err() == nil; n++ {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				s := time.Now()
				rep, err := c.Do(cctx, []byte("SET"), []byte(fmt.Sprintf("load:%d:%d", i, n%1000)), val)
				cancel()
				mine = append(mine, time.Since(s))
				if err != nil || !rep.IsOK() {
					errs++
					if err != nil {
						break
					}
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			lr.Errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	lr.Ops = len(lat) - lr.Errors
	lr.OpsPerS = float64(lr.Ops) / el.Seconds()
	lr.P50, lr.P99 = quantile(lat, 0.5), quantile(lat, 0.99)
	return lr, ctx.Err()
}
