//go:build linux

// Package lintest is test support for linearizability checks through the
// VIP (porcupine, github.com/anishathalye/porcupine, with the map of
// registers in internal/linmodel): a concurrent history, and clients that
// SET through the forked port and GET through the anycast port,
// reconnecting after any error or every so often. Only tests import it.
package lintest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/internal/linmodel"
)

// History is a concurrent history with counters. Its methods are safe
// for concurrent use.
type History struct {
	mu                sync.Mutex
	ops               []porcupine.Operation
	Start             time.Time
	OKSets, OKGets    atomic.Int64
	Unknown, FailGets atomic.Int64
	// Phase is the experiment's phase, set by the test; Done counts
	// operations completed in each phase (up to 16), SetsDone SETs.
	Phase          atomic.Int32
	Done, SetsDone [16]atomic.Int64
	// Paused makes writers hold off (readers go on).
	Paused atomic.Bool
	// Reconnect, if positive, makes clients open a new connection this
	// often.
	Reconnect time.Duration
}

// NewHistory starts a history now.
func NewHistory(reconnect time.Duration) *History {
	return &History{Start: time.Now(), Reconnect: reconnect}
}

func (h *History) now() int64 { return time.Since(h.Start).Nanoseconds() }

// Ops returns a copy of the operations recorded so far.
func (h *History) Ops() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// Client runs one client until stop: forked SETs (writer) or anycast GETs
// (reader) on nKeys contended keys, reconnecting after any error (and
// every h.Reconnect). Failed GETs are dropped; failed SETs are kept with
// an unknown outcome (they may take effect at any later time).
func Client(ctx context.Context, e *scenario.Env, h *History, id int, writer bool, nKeys int, stop <-chan struct{}) {
	port := uint16(scenario.ReadPort)
	if writer {
		port = scenario.WritePort
	}
	rng := rand.New(rand.NewPCG(uint64(id), 11))
	var c *resp.Client
	var opened time.Time
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		if writer && h.Paused.Load() {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if c != nil && h.Reconnect > 0 && time.Since(opened) > h.Reconnect {
			c.Close()
			c = nil
		}
		if c == nil {
			conn, err := e.DialClient(ctx, port)
			if err != nil {
				time.Sleep(50 * time.Millisecond) // the middlebox refuses while no DC is current
				continue
			}
			c, opened = resp.NewClient(conn), time.Now()
		}
		in := linmodel.Input{Op: linmodel.Get, Key: fmt.Sprintf("lin:%d", rng.IntN(nKeys))}
		if writer {
			in.Op, in.Value = linmodel.Set, fmt.Sprintf("c%d-%d", id, seq)
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		call := h.now()
		var rep resp.Reply
		var err error
		if writer {
			rep, err = c.Do(cctx, []byte("SET"), []byte(in.Key), []byte(in.Value))
			if err == nil && !rep.IsOK() {
				err = fmt.Errorf("reply %c%s", rep.Kind, rep.Str)
			}
		} else {
			rep, err = c.Do(cctx, []byte("GET"), []byte(in.Key))
			if err == nil && rep.Kind != '$' {
				err = fmt.Errorf("reply %c%s", rep.Kind, rep.Str)
			}
		}
		cancel()
		ret := h.now()
		var out string
		switch {
		case err != nil && !writer:
			h.FailGets.Add(1)
			c.Close()
			c = nil
			continue
		case err != nil:
			h.Unknown.Add(1)
			ret = math.MaxInt64 // may take effect at any later time
			c.Close()
			c = nil
		case writer:
			h.OKSets.Add(1)
		default:
			h.OKGets.Add(1)
			if !rep.Nil {
				out = string(rep.Str)
			}
		}
		if err == nil {
			p := min(int(h.Phase.Load()), len(h.Done)-1)
			h.Done[p].Add(1)
			if writer {
				h.SetsDone[p].Add(1)
			}
		}
		h.mu.Lock()
		h.ops = append(h.ops, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
		h.mu.Unlock()
	}
}

// Check runs porcupine on the history (timeout bounds the search) and,
// when it is not linearizable, writes a visualization and returns its
// path.
func Check(h *History, timeout time.Duration) (porcupine.CheckResult, string) {
	return linmodel.Check(h.Ops(), timeout, os.TempDir())
}
