//go:build linux

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/kvs"
)

// corruptRecord rewrites key's record in every node store of a stopped
// DC with the same tag and flags and another value, as a bad disk or a
// bug would: the change index is left as it was.
func corruptRecord(t *testing.T, env *scenario.Env, dc, key, val string, nodes int) {
	t.Helper()
	for i := 1; i <= nodes; i++ {
		dir := filepath.Join(env.DataDir(dc), fmt.Sprintf("node%d", i))
		db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
		if err != nil {
			t.Fatalf("open %s: %v", dir, err)
		}
		k := append([]byte{'k'}, key...)
		err = db.Update(func(txn *badger.Txn) error {
			item, err := txn.Get(k)
			if err != nil {
				return err
			}
			old, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			rec := append(old[:kvs.TagSize+1:kvs.TagSize+1], val...)
			return txn.Set(k, rec)
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("corrupt %s in %s: %v", key, dir, err)
		}
	}
}

// A record corrupted in every node of the far DC, with its good tag, is
// invisible to catch-up (its tag is below every cursor) and to forked
// writes (+OK either way). The first forked read of it makes the DCs'
// replies differ: the far DC is dropped from the flow and joins with a
// verify pass, which compares its store with the near DC's and repairs
// the record; the far DC is then live, equal to the near one, and serves
// the good value when the near DC is cut.
func TestCorruptRecordRepairedByVerify(t *testing.T) {
	env := newLifeEnv(t, scenario.Sequencing{})
	ctx := context.Background()
	c, err := dialWrite(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys := []string{"victim"}
	for i := range 200 {
		keys = append(keys, fmt.Sprintf("bystander:%d", i))
	}
	for _, k := range keys {
		if err := set(ctx, c, k, "good:"+k); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		vals, err := readInDC(ctx, env, far, keys)
		if err == nil && vals[0] == "good:victim" && vals[len(vals)-1] == "good:"+keys[len(keys)-1] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never held the writes: %v %v", far, vals, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The far DC loses its servers; its disks come back with the record
	// corrupted; it rejoins through a plain catch-up.
	env.StopCluster(far)
	waitState(t, env, far, scenario.StateDown, 30*time.Second)
	corruptRecord(t, env, far, "victim", "corrupt", 3)
	if err := env.StartCluster(ctx, far); err != nil {
		t.Fatal(err)
	}
	waitState(t, env, far, scenario.StateLive, 90*time.Second)
	if vals, err := readInDC(ctx, env, far, []string{"victim"}); err != nil || vals[0] != "corrupt" {
		t.Fatalf("after the plain rejoin %s holds victim=%q (%v), want the corrupt value (else this test tests nothing)", far, vals, err)
	}
	verifies0, _, _ := env.Metric("sdnkvs_dc_catchup_verify_passes_total")
	mismatches0, _, _ := env.Metric("sdnkvs_middlebox_fork_reply_mismatches_total")

	// The first forked read of it.
	c, err = dialWrite(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	rep, err := c.Do(cctx, []byte("GET"), []byte("victim"))
	cancel()
	c.Close()
	if err != nil || string(rep.Str) != "good:victim" {
		t.Fatalf("forked GET victim: %q (%v), want the near DC's good value (the far DC's bytes must not reach the client)\nmiddlebox output (tail):\n%s", rep.Str, err, tail(env.MiddleboxOutput(), 3000))
	}
	waitState(t, env, far, scenario.StateJoining, 30*time.Second)
	waitState(t, env, far, scenario.StateLive, 90*time.Second)
	verifies, _, _ := env.Metric("sdnkvs_dc_catchup_verify_passes_total")
	mismatches, _, _ := env.Metric("sdnkvs_middlebox_fork_reply_mismatches_total")
	if verifies <= verifies0 || mismatches <= mismatches0 {
		t.Errorf("verify passes %v -> %v, reply mismatches %v -> %v: want both to rise", verifies0, verifies, mismatches0, mismatches)
	}
	vals, err := readInDC(ctx, env, far, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if vals[i] != "good:"+k {
			t.Errorf("%s holds %s=%q after the verify pass, want %q", far, k, vals[i], "good:"+k)
		}
	}

	// A forked read again: no mismatch now; then the far DC alone serves
	// the good value.
	c, err = dialWrite(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	rep, err = c.Do(cctx, []byte("GET"), []byte("victim"))
	cancel()
	c.Close()
	if err != nil || string(rep.Str) != "good:victim" {
		t.Fatalf("second forked GET victim: %q (%v)", rep.Str, err)
	}
	if m, _, _ := env.Metric("sdnkvs_middlebox_fork_reply_mismatches_total"); m != mismatches {
		t.Errorf("reply mismatches %v -> %v after the repair", mismatches, m)
	}
	if st, _ := env.DCStateOf(far); st.Lifecycle() != scenario.StateLive {
		t.Errorf("%s is %s after a forked read of the repaired record", far, st.Lifecycle())
	}
	cut(t, env, near)
	waitState(t, env, near, scenario.StateDown, 30*time.Second)
	dc, got, err := readAnycast(ctx, env, []string{"victim"})
	if err != nil || dc != far || got[0] != "good:victim" {
		t.Errorf("anycast read with %s cut: served by %q, victim=%q (%v), want %s and the good value", near, dc, got, err, far)
	}
}

// Commands whose answer used to name the node (INFO, CLIENT ID, HELLO),
// sent on the forked port, get the same bytes from every DC: no DC is
// dropped for a reply mismatch, and none leaves service. Before, one
// client sending INFO in a loop kept the far DC joining.
func TestNodeNamingCommandsOnForkedPort(t *testing.T) {
	env := newLifeEnv(t, scenario.Sequencing{})
	ctx := context.Background()
	before, _, err := env.Metric("sdnkvs_dc_transitions_total")
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialWrite(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		for _, cmd := range [][][]byte{{[]byte("INFO")}, {[]byte("CLIENT"), []byte("ID")}, {[]byte("HELLO"), []byte("2")}} {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rep, err := c.Do(cctx, cmd...)
			cancel()
			if err != nil || rep.Kind == '-' {
				t.Fatalf("round %d %s: %c%s (%v)", i, cmd[0], rep.Kind, rep.Str, err)
			}
		}
		if err := set(ctx, c, "after-info", fmt.Sprint(i)); err != nil {
			t.Fatalf("round %d: SET on the same connection: %v", i, err)
		}
	}
	if m, _, err := env.Metric("sdnkvs_middlebox_fork_reply_mismatches_total"); err != nil || m != 0 {
		t.Errorf("reply mismatches %v (%v), want 0", m, err)
	}
	if after, _, err := env.Metric("sdnkvs_dc_transitions_total"); err != nil || after != before {
		t.Errorf("DC lifecycle transitions %v -> %v (%v) after node-naming commands on the forked port", before, after, err)
	}
}
