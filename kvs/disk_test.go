package kvs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// TestFullDisk fills a small tmpfs under a node: the node refuses writes
// with -MISCONF before the disk is full, keeps serving reads, never
// crashes, and accepts writes again once space is freed.
func TestFullDisk(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=160m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	n := startOne(t, func(c *Config) {
		c.InMemory, c.Dir = false, filepath.Join(dir, "data")
		c.MinFreeDisk = 48 << 20
	})
	rc := redisClient(t, n.Addr())
	if err := rc.Set(bg, "keep", "me", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Fill the file system from outside the node until it is nearly full.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()
	testenv.WaitFor(t, 5*time.Second, "low space noticed", n.DiskFull)
	err = rc.Set(bg, "x", strings.Repeat("v", 1000), 0).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "MISCONF") {
		t.Fatalf("SET on a full disk: %v, want MISCONF", err)
	}
	if v, err := rc.Get(bg, "keep").Result(); err != nil || v != "me" {
		t.Fatalf("GET on a full disk: %q, %v", v, err)
	}
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "space recovered", func() bool { return !n.DiskFull() })
	// Writes resume; write more than the free-space floor in total so the
	// watcher must stop us again before Badger runs out.
	val := strings.Repeat("w", 64<<10)
	refused := false
	for i := 0; i < 4000 && !refused; i++ {
		err := rc.Set(bg, fmt.Sprintf("k%d", i), val, 0).Err()
		switch {
		case err == nil:
		case strings.HasPrefix(err.Error(), "MISCONF") || strings.Contains(err.Error(), "no quorum"):
			refused = true
		default:
			t.Fatalf("SET %d: %v", i, err)
		}
	}
	if !refused {
		t.Fatal("250 MiB written to a 160 MiB file system without a refusal")
	}
	if v, err := rc.Get(bg, "keep").Result(); err != nil || v != "me" {
		t.Fatalf("GET after refusals: %q, %v", v, err)
	}
}

func redisClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 15 * time.Second, PoolSize: 4})
	t.Cleanup(func() { rc.Close() })
	return rc
}
