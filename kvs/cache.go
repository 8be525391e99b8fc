package kvs

import (
	"hash/maphash"
	"sync"
)

// recCache keeps the newest committed record (tag, flags and, for small
// values, the value) of recently used keys, so that replica reads and the
// committer's tag checks skip Badger. It is always consistent with the store:
//
//   - only the committer updates it, after each commit, unconditionally
//     (upsert), and bumps epoch under the same lock;
//   - a reader that missed fills it only if epoch did not change since before
//     its Badger read (no commit was published in between), so it never
//     installs a record older than one already committed;
//   - eviction (a random entry when full) only forgets.
//
// A record present in the cache is therefore exactly the committed one.
// recCache is safe for concurrent use.
type recCache struct {
	mu    sync.RWMutex
	m     map[string]*cacheEntry
	epoch uint64
	max   int
}

type cacheEntry struct {
	tag    Tag
	flags  byte
	hasVal bool
	val    []byte
}

const (
	cacheMaxEntries = 1 << 17
	cacheMaxValue   = 1 << 10 // larger values are cached as tag only
)

func newRecCache(max int) *recCache {
	return &recCache{m: make(map[string]*cacheEntry, 1024), max: max}
}

// get returns key's cached record; val is appended to dst when withValue.
// hit is false when the record (or its value, if asked) is not cached; then
// epoch is the value to pass to fill after reading the store.
func (c *recCache) get(key []byte, withValue bool, dst []byte) (t Tag, flags byte, val []byte, hit bool, epoch uint64) {
	c.mu.RLock()
	e := c.m[string(key)]
	if e != nil && (!withValue || e.hasVal) {
		if withValue {
			dst = append(dst, e.val...)
		}
		t, flags = e.tag, e.flags
		c.mu.RUnlock()
		return t, flags, dst, true, 0
	}
	epoch = c.epoch
	c.mu.RUnlock()
	return Tag{}, 0, dst, false, epoch
}

// fill caches a record read from the store after get missed with epoch.
func (c *recCache) fill(key []byte, epoch uint64, t Tag, flags byte, withValue bool, val []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return // a commit was published meanwhile: the read may be stale
	}
	if e := c.m[string(key)]; e != nil && (e.hasVal || !withValue) {
		return
	}
	c.setLocked(key, t, flags, withValue, val)
}

// setLocked stores key's record (copying key and val). c.mu must be held.
func (c *recCache) setLocked(key []byte, t Tag, flags byte, withValue bool, val []byte) {
	e := c.m[string(key)]
	if e == nil {
		e = c.evictLocked()
		c.m[string(key)] = e
	}
	e.tag, e.flags = t, flags
	e.hasVal = withValue && len(val) <= cacheMaxValue
	if e.hasVal {
		e.val = append(e.val[:0], val...)
	} else {
		e.val = e.val[:0]
	}
}

// evictLocked drops a random entry when the cache is full and returns an
// entry to reuse (the evicted one, or a new one).
func (c *recCache) evictLocked() *cacheEntry {
	if len(c.m) < c.max {
		return &cacheEntry{}
	}
	for k, e := range c.m { // map iteration starts at a random entry
		delete(c.m, k)
		if cap(e.val) > cacheMaxValue {
			e.val = nil
		}
		return e
	}
	return &cacheEntry{}
}

// batchIndex finds the latest earlier entry of a commit batch with the same
// key hash without allocating after warm-up. Not safe for concurrent use.
type batchIndex struct {
	seed maphash.Seed
	m    map[uint64]int
}

func newBatchIndex() *batchIndex {
	return &batchIndex{seed: maphash.MakeSeed(), m: make(map[uint64]int)}
}

// forgetLocked drops key (after a failed commit whose outcome is unknown).
// c.mu must be held.
func (c *recCache) forgetLocked(key []byte) { delete(c.m, string(key)) }
