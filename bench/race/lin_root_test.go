//go:build linux

package race

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

type linInput struct {
	set   bool
	key   string
	value string
}

// linModel is a map of registers partitioned by key; values are unique and
// non-empty, so "" means absent.
var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range history {
			k := o.Input.(linInput).key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], o)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(linInput)
		if in.set {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(linInput)
		if in.set {
			return fmt.Sprintf("set(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, output)
	},
}

type linHistory struct {
	mu                sync.Mutex
	ops               []porcupine.Operation
	start             time.Time
	okSets, okGets    atomic.Int64
	unknown, failGets atomic.Int64
	afterCut          atomic.Int64 // operations completed after the cut
	setsAfterCut      atomic.Int64
	cut               atomic.Bool
	paused            atomic.Bool // writers hold off (readers go on)
}

func (h *linHistory) now() int64 { return time.Since(h.start).Nanoseconds() }

// linClient runs one client until stop: forked SETs (writer) or anycast
// GETs (reader) on nKeys contended keys, reconnecting after any error.
// Failed GETs are dropped; failed SETs are kept with an unknown outcome.
func linClient(ctx context.Context, e *Env, h *linHistory, id int, writer bool, nKeys int, stop <-chan struct{}) {
	port := uint16(scenario.ReadPort)
	if writer {
		port = scenario.WritePort
	}
	rng := rand.New(rand.NewPCG(uint64(id), 11))
	var c *resp.Client
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
		if writer && h.paused.Load() {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if c == nil {
			conn, err := e.DialClient(ctx, port)
			if err != nil {
				time.Sleep(50 * time.Millisecond) // the middlebox refuses while no DC is live
				continue
			}
			c = resp.NewClient(conn)
		}
		in := linInput{set: writer, key: fmt.Sprintf("lin:%d", rng.IntN(nKeys))}
		if writer {
			in.value = fmt.Sprintf("c%d-%d", id, seq)
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		call := h.now()
		var rep resp.Reply
		var err error
		if writer {
			rep, err = c.Do(cctx, []byte("SET"), []byte(in.key), []byte(in.value))
			if err == nil && !rep.IsOK() {
				err = fmt.Errorf("reply %c%s", rep.Kind, rep.Str)
			}
		} else {
			rep, err = c.Do(cctx, []byte("GET"), []byte(in.key))
			if err == nil && rep.Kind != '$' {
				err = fmt.Errorf("reply %c%s", rep.Kind, rep.Str)
			}
		}
		cancel()
		ret := h.now()
		var out string
		switch {
		case err != nil && !writer:
			h.failGets.Add(1)
			c.Close()
			c = nil
			continue
		case err != nil:
			h.unknown.Add(1)
			ret = math.MaxInt64 // may take effect at any later time
			c.Close()
			c = nil
		case writer:
			h.okSets.Add(1)
		default:
			h.okGets.Add(1)
			if !rep.Nil {
				out = string(rep.Str)
			}
		}
		if err == nil && h.cut.Load() {
			h.afterCut.Add(1)
			if writer {
				h.setsAfterCut.Add(1)
			}
		}
		h.mu.Lock()
		h.ops = append(h.ops, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
		h.mu.Unlock()
	}
}

// TestSequencedLinearizableAcrossNearCut: forked SETs and anycast GETs on
// two contended keys through the VIP, across a cut of the near DC (the
// detector moves reads and drops the forked branches): the history is
// linearizable, so reads from the far DC never go back to a value older
// than one readers saw from the near DC. Writers pause a second before the
// cut (readers read the last writes' values from the near DC) until readers
// have read from the far DC (so its values for those writes are observed
// before new writes cover them), then go on.
func TestSequencedLinearizableAcrossNearCut(t *testing.T) {
	dcs := []testbed.DC{{Name: "sydney", Nodes: 3, Delay: 2 * time.Millisecond}, {Name: "dublin", Nodes: 3, Delay: 20 * time.Millisecond}}
	e := newTestEnv(t, dcs)
	ctx := context.Background()
	h := &linHistory{start: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { linClient(ctx, e, h, i, i < 6, 2, stop) })
	}
	time.Sleep(3 * time.Second) // load before the cut (a duration of the experiment, not a wait for a condition)
	h.paused.Store(true)
	time.Sleep(time.Second) // readers read the last writes' values from sydney
	if err := e.TB.Cut("sydney"); err != nil {
		t.Fatal(err)
	}
	h.cut.Store(true)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.WaitDCLive(wctx, "sydney", false); err != nil {
		t.Fatalf("sydney never declared down: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for h.afterCut.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	h.paused.Store(false)
	for h.setsAfterCut.Load() < 50 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if h.afterCut.Load() < 200 || h.setsAfterCut.Load() < 50 {
		t.Fatalf("only %d operations (%d SETs) completed after the cut", h.afterCut.Load(), h.setsAfterCut.Load())
	}
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, 120*time.Second)
	t.Logf("%d operations: %d SETs ok, %d GETs ok, %d SETs unknown, %d GETs failed, %d after the cut; linearizable: %v",
		len(ops), h.okSets.Load(), h.okGets.Load(), h.unknown.Load(), h.failGets.Load(), h.afterCut.Load(), res)
	if res != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("sdnkvs-lin-%d.html", time.Now().UnixNano()))
		if f, err := os.Create(path); err == nil {
			porcupine.Visualize(linModel, info, f)
			f.Close()
		}
		t.Fatalf("history through the VIP is not linearizable (%v); visualization in %s", res, path)
	}
}
