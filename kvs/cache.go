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
	max   int // entries
	bytes int // approximate memory held (keys, values, overhead)
	limit int // bytes
}

type cacheEntry struct {
	tag    Tag
	flags  byte
	hasVal bool
	val    []byte
}

const (
	cacheMaxEntries = 1 << 17
	cacheMaxBytes   = 24 << 20 // about 131k entries of small keys and values
	cacheMaxValue   = 1 << 10  // larger values are cached as tag only
	cacheOverhead   = 96       // map slot, entry and string headers
)

func newRecCache(max, limit int) *recCache {
	return &recCache{m: make(map[string]*cacheEntry, 1024), max: max, limit: limit}
}

func entrySize(key []byte, e *cacheEntry) int { return len(key) + cap(e.val) + cacheOverhead }

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

// setLocked stores key's record (copying key and val), then evicts random
// other entries until the cache is within its budgets. c.mu must be held.
func (c *recCache) setLocked(key []byte, t Tag, flags byte, withValue bool, val []byte) {
	e := c.m[string(key)]
	if e == nil {
		e = &cacheEntry{}
		c.m[string(key)] = e
	} else {
		c.bytes -= entrySize(key, e)
	}
	e.tag, e.flags = t, flags
	e.hasVal = withValue && len(val) <= cacheMaxValue
	if e.hasVal {
		e.val = append(e.val[:0], val...)
	} else {
		e.val = nil
	}
	c.bytes += entrySize(key, e)
	for len(c.m) > c.max || c.bytes > c.limit {
		victim := ""
		found := false
		for k := range c.m { // map iteration starts at a random entry
			if k != string(key) {
				victim, found = k, true
				break
			}
		}
		if !found {
			c.forgetLocked(key) // alone and still too big
			return
		}
		c.bytes -= len(victim) + cap(c.m[victim].val) + cacheOverhead
		delete(c.m, victim)
	}
}

// forgetLocked drops key (after a failed commit whose outcome is unknown).
// c.mu must be held.
func (c *recCache) forgetLocked(key []byte) {
	if e := c.m[string(key)]; e != nil {
		c.bytes -= entrySize(key, e)
		delete(c.m, string(key))
	}
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
