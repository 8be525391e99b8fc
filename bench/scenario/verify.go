//go:build linux

package scenario

import (
	"context"
	"fmt"
	"sync"
)

// Check is the outcome of checking acknowledged writes against one DC.
type Check struct {
	DC      string
	Checked int      // writes checked
	Missing int      // absent in the DC
	Wrong   int      // present with another value
	Errors  int      // batches that failed (their keys count as missing)
	Samples []string // a few lost keys, for the report
}

// Lost is Missing + Wrong: acknowledged writes the DC does not hold.
func (c Check) Lost() int { return c.Missing + c.Wrong }

// Verify reads every id's key from DC dc with quorum reads (MGET in
// batches, spread over the DC's nodes, dialled from inside the DC's
// namespace) and compares it with the value that was written.
func (e *Env) Verify(ctx context.Context, dc string, w *Workload, ids []uint64) (Check, error) {
	const batch = 256
	const workers = 4
	res := Check{DC: dc, Checked: len(ids)}
	var mu sync.Mutex
	jobs := make(chan []uint64)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for wk := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.DialDC(ctx, dc, wk)
			if err != nil {
				errc <- err
				for range jobs { // keep the producer going
				}
				return
			}
			defer c.Close()
			args := make([][]byte, 0, batch+1)
			for b := range jobs {
				args = append(args[:0], []byte("MGET"))
				for _, id := range b {
					args = append(args, w.Key(id))
				}
				rep, err := c.Do(ctx, args...)
				var miss, wrong int
				var samples []string
				if err != nil || rep.Kind != '*' || len(rep.Elems) != len(b) {
					mu.Lock()
					res.Errors++
					res.Missing += len(b)
					mu.Unlock()
					if err != nil {
						errc <- fmt.Errorf("verify in %s: %w", dc, err)
						for range jobs {
						}
						return
					}
					continue
				}
				for i, id := range b {
					el := rep.Elems[i]
					switch {
					case el.Nil:
						miss++
					case string(el.Str) != string(w.Value(id)):
						wrong++
					default:
						continue
					}
					if len(samples) < 5 {
						samples = append(samples, string(w.Key(id)))
					}
				}
				mu.Lock()
				res.Missing += miss
				res.Wrong += wrong
				if len(res.Samples) < 5 {
					res.Samples = append(res.Samples, samples[:min(len(samples), 5-len(res.Samples))]...)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < len(ids); i += batch {
		jobs <- ids[i:min(i+batch, len(ids))]
	}
	close(jobs)
	wg.Wait()
	close(errc)
	var first error
	for err := range errc {
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return res, first
	}
	return res, nil
}
