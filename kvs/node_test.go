package kvs

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestClusterBasics(t *testing.T) {
	c := testCluster(t, 9, 5, 10*time.Second)
	a, b := client(t, c, 0), client(t, c, 5)
	if err := a.Set(bg, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Get(bg, "k").Result(); err != nil || v != "v1" {
		t.Fatalf("get via another node = %q, %v; want v1", v, err)
	}
	if n, err := b.Del(bg, "k", "absent").Result(); err != nil || n != 2 {
		t.Fatalf("del = %d, %v; want 2 (distinct keys named)", n, err)
	}
	if _, err := a.Get(bg, "k").Result(); err == nil {
		t.Fatalf("get after del found a value")
	}
	if err := a.MSet(bg, "x", "1", "y", "2").Err(); err != nil {
		t.Fatal(err)
	}
	vs, err := b.MGet(bg, "x", "y", "z").Result()
	if err != nil || vs[0] != "1" || vs[1] != "2" || vs[2] != nil {
		t.Fatalf("mget = %v, %v", vs, err)
	}
	if n, err := b.Exists(bg, "x", "z", "y").Result(); err != nil || n != 2 {
		t.Fatalf("exists = %d, %v; want 2", n, err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	c := testCluster(t, 3, 2, 10*time.Second)
	rc := redis.NewClient(&redis.Options{Addr: c.Config(0).Listen})
	for i := 0; i < 50; i++ {
		if err := rc.Set(bg, fmt.Sprint(i), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rc.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "goroutines to return to the count before the cluster", func() bool {
		return runtime.NumGoroutine() <= before+2
	})
}
