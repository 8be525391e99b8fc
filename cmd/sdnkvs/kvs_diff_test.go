package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/sdnkvs/sdnkvs/kvs"
)

func diffNode(t *testing.T, pass string) *kvs.Node {
	t.Helper()
	ports := make([]string, 2)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().String()
		ln.Close()
	}
	n, err := kvs.Start(kvs.Config{ID: 1, Listen: ports[0], PeerListen: ports[1], Peers: []string{ports[1]},
		InMemory: true, RequirePass: []byte(pass), PeerSecret: []byte("peer-secret-for-the-diff-test")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// sdnkvs kvs diff exits non-zero when the DCs differ and zero when they do
// not; the flags are checked by name.
func TestKvsDiffCommand(t *testing.T) {
	const pass = "diff-password"
	a, b := diffNode(t, pass), diffNode(t, pass)
	pf := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pf, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) error {
		t.Helper()
		cli, ctx, err := parseArgs(t, args...)
		if err != nil {
			return err
		}
		return ctx.Run(&cli.Globals)
	}
	args := []string{"kvs", "diff", "--a", a.Addr(), "--b", b.Addr(), "--password-file", pf}
	if err := run(args...); err != nil {
		t.Fatalf("empty DCs: %v", err)
	}
	rc := redis.NewClient(&redis.Options{Addr: a.Addr(), Password: pass})
	defer rc.Close()
	if err := rc.Set(context.Background(), "only-in-a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := run(args...); !errors.Is(err, errDiverged) || !strings.Contains(err.Error(), "1 keys") {
		t.Fatalf("diverged DCs: %v", err)
	}
	if err := run("kvs", "diff", "--a", a.Addr(), "--b", b.Addr(), "--password-file", pf, "--page", "0"); err == nil || !strings.Contains(err.Error(), "--page") {
		t.Fatalf("bad --page: %v", err)
	}
	if err := run("kvs", "diff", "--a", a.Addr(), "--password-file", pf); err == nil || !strings.Contains(err.Error(), "--b") {
		t.Fatalf("missing --b: %v", err)
	}
}
