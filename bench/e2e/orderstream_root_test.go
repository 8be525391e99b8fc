//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
)

// orderUp counts DC dc's nodes whose order stream the middlebox has up.
func orderUp(t *testing.T, env *scenario.Env, dc string) int {
	t.Helper()
	raw, err := env.Control("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	prefix := []byte(`sdnkvs_middlebox_sequencer_order_up{dc="` + dc + `"`)
	n := 0
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		if v, err := strconv.ParseFloat(string(line[bytes.LastIndexByte(line, ' ')+1:]), 64); err == nil && v == 1 {
			n++
		}
	}
	return n
}

// The order stream across a cut and a heal, with kernel TCP in
// namespaces: while the far DC is cut, forked writes go on (the frames to
// its nodes stay unacknowledged), and its order connections end within
// seconds (TCP_USER_TIMEOUT 3 s, keepalives) instead of surviving the cut
// in retransmission backoff; after the heal they are up again within
// seconds, before or with the DC's readmission, so the healed DC sequences
// the writes of new forked connections at once: no reply mismatch (a node
// without the flow's OPEN refuses the write as unsequenced where the live
// DC answers +OK) and the DC becomes live.
func TestOrderStreamEndsOnCutAndRedialsOnHeal(t *testing.T) {
	env := newLifeEnv(t, scenario.Sequencing{})
	ctx := context.Background()
	if n := orderUp(t, env, far); n != 3 {
		t.Fatalf("%s: %d order streams up before the cut, want 3", far, n)
	}
	c, err := dialWrite(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close() }()
	cut(t, env, far)
	cutAt := time.Now()
	// Writes while it is cut: frames in flight to its nodes.
	var down time.Duration
	for i := 0; down == 0; i++ {
		if err := set(ctx, c, "cut:"+strconv.Itoa(i), "v"); err != nil {
			t.Logf("write during the cut: %v (reconnecting)", err)
			c.Close()
			if c, err = dialWrite(ctx, env); err != nil {
				t.Fatal(err)
			}
		}
		if orderUp(t, env, far) == 0 {
			down = time.Since(cutAt)
		}
		if time.Since(cutAt) > 20*time.Second {
			t.Fatalf("%s's order streams still up 20 s into the cut (%d up)", far, orderUp(t, env, far))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Hold the cut well past the backoff a surviving connection would be in.
	for time.Since(cutAt) < 12*time.Second {
		if err := set(ctx, c, fmt.Sprint("cut-late:", time.Now().UnixNano()), "v"); err != nil {
			c.Close()
			if c, err = dialWrite(ctx, env); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	mismatches0, _, _ := env.Metric("sdnkvs_middlebox_fork_reply_mismatches_total")
	heal(t, env, far)
	healAt := time.Now()
	var up time.Duration
	for up == 0 {
		if orderUp(t, env, far) == 3 {
			up = time.Since(healAt)
		}
		if time.Since(healAt) > 15*time.Second {
			t.Fatalf("%s's order streams not all up 15 s after the heal (%d up)", far, orderUp(t, env, far))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// New forked connections, each writing once, until the DC is live.
	deadline := time.Now().Add(90 * time.Second)
	writes := 0
	for {
		d, err := env.DCStateOf(far)
		if err == nil && d.Lifecycle() == scenario.StateLive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not live 90 s after the heal: %+v", far, d.Life())
		}
		w, err := dialWrite(ctx, env)
		if err == nil {
			if err := set(ctx, w, fmt.Sprint("healed:", writes), "v"); err == nil {
				writes++
			}
			w.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	liveAfter := time.Since(healAt)
	if m, _, _ := env.Metric("sdnkvs_middlebox_fork_reply_mismatches_total"); m != mismatches0 {
		t.Errorf("reply mismatches %v -> %v after the heal: the healed DC answered new forked writes otherwise", mismatches0, m)
	}
	t.Logf("order streams down %.1f s after the cut, all up %.1f s after the heal; %s live %.1f s after the heal, %d forked writes on new connections meanwhile",
		down.Seconds(), up.Seconds(), far, liveAfter.Seconds(), writes)
	if down > 10*time.Second {
		t.Errorf("order streams ended %v after the cut, want within seconds", down)
	}
}
