//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestMain(m *testing.M) { testbedtest.Main(m) }

// Near and far DC of every test: small and quick (3 nodes, short delays).
const (
	near = "sydney"
	far  = "dublin"
)

func testDCs() []testbed.DC {
	return []testbed.DC{
		{Name: near, Nodes: 3, Delay: 2 * time.Millisecond},
		{Name: far, Nodes: 3, Delay: 20 * time.Millisecond},
	}
}

// resetAfter is the middlebox's --rejoin-reset-after in these tests: flows
// opened during an outage are reset this long after the first completed
// catch-up pass (the default, 10 s, would only make the tests longer).
const resetAfter = "2s"

// newLifeEnv starts a lifecycle environment (sequenced stores that catch
// up from each other, the middlebox with the fast detector) torn down with
// the test.
func newLifeEnv(t *testing.T, seq scenario.Sequencing, mbExtra ...string) *scenario.Env {
	t.Helper()
	testenv.RequireRoot(t)
	seq.Lifecycle = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env, err := scenario.NewEnv(ctx, scenario.EnvConfig{Bin: testbedtest.SharedBinary(t), DCs: testDCs(), Log: testbedtest.Log(t), Sequencing: seq})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	extra := append([]string{"--rejoin-reset-after=" + resetAfter}, mbExtra...)
	if err := env.StartMiddlebox(ctx, scenario.MB{Detector: "fast", Extra: extra}); err != nil {
		t.Fatal(err)
	}
	if err := env.CheckSettled(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	return env
}

// waitState waits until DC dc is in state (live, down, joining).
func waitState(t *testing.T, env *scenario.Env, dc, state string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := env.WaitDCState(ctx, dc, state); err != nil {
		t.Fatalf("%v\nmiddlebox output (tail):\n%s", err, tail(env.MiddleboxOutput(), 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// cut cuts dc and waits until the middlebox reports it down.
func cut(t *testing.T, env *scenario.Env, dc string) {
	t.Helper()
	if err := env.TB.Cut(dc); err != nil {
		t.Fatal(err)
	}
	waitState(t, env, dc, scenario.StateDown, 30*time.Second)
}

// heal heals dc.
func heal(t *testing.T, env *scenario.Env, dc string) {
	t.Helper()
	if err := env.TB.Heal(dc); err != nil {
		t.Fatal(err)
	}
}

// dialWrite opens a client connection to the forked port.
func dialWrite(ctx context.Context, env *scenario.Env) (*resp.Client, error) {
	conn, err := env.DialClient(ctx, scenario.WritePort)
	if err != nil {
		return nil, err
	}
	return resp.NewClient(conn), nil
}

// set SETs key=val on c (5 s deadline) and reports whether it was
// acknowledged.
func set(ctx context.Context, c *resp.Client, key, val string) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rep, err := c.Do(cctx, []byte("SET"), []byte(key), []byte(val))
	if err != nil {
		return err
	}
	if !rep.IsOK() {
		return fmt.Errorf("SET %s: reply %c%s", key, rep.Kind, rep.Str)
	}
	return nil
}

// readAnycast reads keys on a new anycast connection with one MGET of the
// marker and the keys, and returns the DC that served it and the values
// ("" for nil).
func readAnycast(ctx context.Context, env *scenario.Env, keys []string) (string, []string, error) {
	conn, err := env.DialClient(ctx, scenario.ReadPort)
	if err != nil {
		return "", nil, err
	}
	c := resp.NewClient(conn)
	defer c.Close()
	args := [][]byte{[]byte("MGET"), []byte(scenario.MarkerKey)}
	for _, k := range keys {
		args = append(args, []byte(k))
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := c.Do(cctx, args...)
	if err != nil {
		return "", nil, err
	}
	if rep.Kind != '*' || len(rep.Elems) != len(args)-1 {
		return "", nil, fmt.Errorf("MGET: reply %c%s with %d elements", rep.Kind, rep.Str, len(rep.Elems))
	}
	vals := make([]string, len(keys))
	for i := range keys {
		vals[i] = string(rep.Elems[i+1].Str)
	}
	return string(rep.Elems[0].Str), vals, nil
}

// readInDC reads keys inside DC dc (quorum reads, bypassing the
// middlebox) and returns the values ("" for nil).
func readInDC(ctx context.Context, env *scenario.Env, dc string, keys []string) ([]string, error) {
	c, err := env.DialDC(ctx, dc, 0)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := make([]string, 0, len(keys))
	for i := 0; i < len(keys); i += 500 {
		args := [][]byte{[]byte("MGET")}
		for _, k := range keys[i:min(len(keys), i+500)] {
			args = append(args, []byte(k))
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		rep, err := c.Do(cctx, args...)
		cancel()
		if err != nil {
			return nil, err
		}
		if rep.Kind != '*' || len(rep.Elems) != len(args)-1 {
			return nil, fmt.Errorf("MGET in %s: reply %c%s", dc, rep.Kind, rep.Str)
		}
		for _, el := range rep.Elems {
			out = append(out, string(el.Str))
		}
	}
	return out, nil
}

// loadKeys writes n keys prefix0..prefix<n-1> of size bytes through the
// forked port (pipelined MSETs on one connection) and returns their
// value.
func loadKeys(ctx context.Context, env *scenario.Env, prefix string, n, size int) (string, error) {
	val := make([]byte, size)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	conn, err := env.DialClient(ctx, scenario.WritePort)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(90 * time.Second))
	const batch = 100
	done := make(chan error, 1)
	nb := (n + batch - 1) / batch
	go func() {
		br := bufio.NewReader(conn)
		for range nb {
			rep, err := resp.ReadReply(br)
			if err == nil && !rep.IsOK() {
				err = fmt.Errorf("MSET: reply %c%s", rep.Kind, rep.Str)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	bw := bufio.NewWriter(conn)
	for b := range nb {
		args := [][]byte{[]byte("MSET")}
		for k := b * batch; k < min(n, (b+1)*batch); k++ {
			args = append(args, []byte(prefix+strconv.Itoa(k)), val)
		}
		if _, err := bw.Write(resp.AppendCommand(nil, args...)); err != nil {
			return "", err
		}
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	return string(val), <-done
}
