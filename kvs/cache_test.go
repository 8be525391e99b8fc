package kvs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// putWait stores (t, val) for key and returns the tag the replica then holds.
func putWait(t testing.TB, s *Store, key []byte, tg Tag, flags byte, val []byte) Tag {
	done := make(chan Tag, 1)
	s.Put(key, tg, flags, val, 1, completionFunc(func(_ uint64, ok bool, held Tag) {
		if !ok {
			t.Error("store failed")
		}
		done <- held
	}))
	return <-done
}

// The record cache must always equal the committed record: under concurrent
// writes (many landing in one commit batch, for the same keys), reads and
// evictions (a cache far smaller than the key space), no read ever returns a
// tag lower than one already acknowledged for that key, and afterwards the
// cached records equal Badger's.
func TestStoreCacheConsistent(t *testing.T) {
	s, err := OpenStore(StoreOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.cache.max = 8
	const keys = 24
	var acked [keys]atomic.Uint64 // highest acknowledged counter per key
	key := func(i int) []byte { return []byte(fmt.Sprintf("key-%d", i)) }
	var wg sync.WaitGroup
	var bad atomic.Int64
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for n := 0; n < 2000; n++ {
				i := rng.IntN(keys)
				c := acked[i].Load() + uint64(rng.IntN(3))
				tg := Tag{Counter: c, Writer: uint64(w)}
				val := []byte(fmt.Sprintf("v%d.%d", c, w))
				if rng.IntN(8) == 0 {
					val = bytes.Repeat(val, cacheMaxValue) // cached as tag only
				}
				held := putWait(t, s, key(i), tg, 0, val)
				if held.Compare(tg) < 0 {
					bad.Add(1)
				}
				for {
					old := acked[i].Load()
					if held.Counter <= old || acked[i].CompareAndSwap(old, held.Counter) {
						break
					}
				}
			}
		}(w)
	}
	var readers sync.WaitGroup
	for r := 0; r < 3; r++ {
		readers.Add(1)
		go func(r int) {
			defer readers.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 2))
			var buf []byte
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rng.IntN(keys)
				floor := acked[i].Load()
				tg, _, v, err := s.Get(key(i), r != 0, buf[:0])
				buf = v
				if err != nil || tg.Counter < floor {
					bad.Add(1)
				}
				if r != 0 && tg.Counter > 0 && !bytes.HasPrefix(v, []byte(fmt.Sprintf("v%d.%d", tg.Counter, tg.Writer))) {
					bad.Add(1)
				}
			}
		}(r)
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d reads or writes saw a record older than an acknowledged one (or a value not matching its tag)", n)
	}
	if n := len(s.cache.m); n == 0 || n > 8 {
		t.Fatalf("cache holds %d entries, want 1..8", n)
	}
	for i := 0; i < keys; i++ {
		ct, cf, cv, _ := s.Get(key(i), true, nil)
		dt, df, dv, err := s.dbGet(key(i), true, nil)
		if err != nil || ct != dt || cf != df || !bytes.Equal(cv, dv) {
			t.Fatalf("key %d: cached (%v %d %q) != stored (%v %d %q) %v", i, ct, cf, cv, dt, df, dv, err)
		}
	}
}

// A replica read of a cached key allocates nothing.
func TestStoreGetCachedNoAlloc(t *testing.T) {
	s, err := OpenStore(StoreOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := []byte("k")
	putWait(t, s, k, Tag{3, 1}, 0, []byte("value"))
	buf := make([]byte, 0, 64)
	var tg Tag
	var v []byte
	allocs := testing.AllocsPerRun(200, func() {
		tg, _, v, _ = s.Get(k, true, buf[:0])
		tg, _, _, _ = s.Get(k, false, nil)
	})
	if allocs != 0 {
		t.Errorf("cached Get allocates %.1f times, want 0", allocs)
	}
	if tg != (Tag{3, 1}) || string(v) != "value" {
		t.Fatalf("Get = %v %q", tg, v)
	}
}

// The cache's memory stays under its byte budget whatever the key and value
// sizes, and its accounting matches its contents.
func TestRecCacheByteBudget(t *testing.T) {
	c := newRecCache(1<<20, 64<<10)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 5000; i++ {
		key := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 1+rng.IntN(2048))
		val := make([]byte, rng.IntN(2*cacheMaxValue))
		c.mu.Lock()
		switch rng.IntN(4) {
		case 0:
			c.forgetLocked(key)
		default:
			c.setLocked(key, Tag{uint64(i), 1}, 0, true, val)
		}
		c.mu.Unlock()
		sum := 0
		for k, e := range c.m {
			sum += entrySize([]byte(k), e)
		}
		if sum != c.bytes || c.bytes > c.limit {
			t.Fatalf("after %d updates: accounted %d bytes, holds %d, limit %d", i, c.bytes, sum, c.limit)
		}
	}
	if len(c.m) == 0 {
		t.Fatal("cache empty: nothing was cached")
	}
}

// TestStorePutBulkCache: a bulk record (catch-up, learner sync) updates a
// cached key, never adds an uncached one, and is read back from the store
// either way; a lower bulk tag leaves the cached record alone.
func TestStorePutBulkCache(t *testing.T) {
	s, err := OpenStore(StoreOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bulk := func(key string, tg Tag, val string) Tag {
		done := make(chan Tag, 1)
		s.PutBulk([]byte(key), tg, 0, []byte(val), 1, completionFunc(func(_ uint64, ok bool, held Tag) {
			if !ok {
				t.Error("store failed")
			}
			done <- held
		}))
		return <-done
	}
	cached := func(key string) (Tag, string, bool) {
		s.cache.mu.RLock()
		defer s.cache.mu.RUnlock()
		e := s.cache.m[key]
		if e == nil {
			return Tag{}, "", false
		}
		return e.tag, string(e.val), true
	}
	putWait(t, s, []byte("hot"), stampTag(10), 0, []byte("old"))
	if _, _, ok := cached("hot"); !ok {
		t.Fatal("a client write was not cached")
	}
	if held := bulk("hot", stampTag(20), "new"); held != stampTag(20) {
		t.Fatalf("bulk put holds %v, want %v", held, stampTag(20))
	}
	if tg, v, ok := cached("hot"); !ok || tg != stampTag(20) || v != "new" {
		t.Fatalf("cached hot key after a newer bulk record: %v %q %v", tg, v, ok)
	}
	if held := bulk("hot", stampTag(15), "older"); held != stampTag(20) {
		t.Fatalf("an older bulk record replaced a newer one: holds %v", held)
	}
	if tg, v, _ := cached("hot"); tg != stampTag(20) || v != "new" {
		t.Fatalf("an older bulk record changed the cache: %v %q", tg, v)
	}
	for i := 0; i < 100; i++ {
		bulk(fmt.Sprintf("cold-%d", i), stampTag(uint64(100+i)), "v")
	}
	s.cache.mu.RLock()
	n := len(s.cache.m)
	s.cache.mu.RUnlock()
	if n != 1 {
		t.Fatalf("bulk records of uncached keys entered the cache: %d entries, want 1", n)
	}
	tg, _, v, err := s.dbGet([]byte("cold-7"), true, nil)
	if err != nil || tg != stampTag(107) || string(v) != "v" {
		t.Fatalf("bulk record in the store: %v %q %v", tg, v, err)
	}
	tg, _, v, err = s.Get([]byte("cold-7"), true, nil)
	if err != nil || tg != stampTag(107) || string(v) != "v" {
		t.Fatalf("bulk record read through the cache: %v %q %v", tg, v, err)
	}
}
