package kvs

// Repairs a learner received (docs/design-lifecycle.md, "Verify pass (store
// side)"). A verify pass leaves a learner out of its comparison but sends
// it the repair batches, as to every replica of the DC. A learner syncing
// from the voters (learner.go) may have read a voter's record before that
// voter was repaired: a corrupt record with a wrong higher tag at or below
// the pass's bound would then win over the repair by the higher-tag rule
// and outlive the pass. So while a node is not a voter it remembers each
// repaired key with the pass's bound, and its sync skips a record of that
// key at or below the bound: the repair is the source DC's quorum record
// for every tag up to it. A record above the bound is a newer write and is
// stored as usual.
//
// Memory: at most learnRepairsMax bytes (keys plus a map entry's
// overhead each); past that the sync cannot tell, so it runs again (the
// voters were repaired by then).

import (
	"errors"
	"sync"
)

const (
	learnRepairsMax      = 64 << 20
	learnRepairsOverhead = 64 // bytes per remembered key beyond the key: map entry, string header, tag
)

var errLearnRepairsOverflow = errors.New("more repairs arrived during the sync than a learner remembers; syncing again")

type learnRepairs struct {
	mu       sync.Mutex
	m        map[string]Tag // key -> the highest bound of a repair of it
	size     int            // bytes remembered (keys plus learnRepairsOverhead each)
	overflow bool
}

// note records a repair of key at bound (called only while not a voter).
func (r *learnRepairs) note(key []byte, bound Tag) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.m[string(key)]; ok {
		if bound.Compare(b) > 0 {
			r.m[string(key)] = bound
		}
		return
	}
	if r.size+len(key)+learnRepairsOverhead > learnRepairsMax {
		r.overflow = true
		return
	}
	if r.m == nil {
		r.m = map[string]Tag{}
	}
	r.m[string(key)] = bound
	r.size += len(key) + learnRepairsOverhead
}

// covers reports whether a repair of key at a bound at or above tag was
// applied: a synced record of key with tag must not replace it.
func (r *learnRepairs) covers(key []byte, tag Tag) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.m[string(key)]
	return ok && tag.Compare(b) <= 0
}

// takeOverflow reports whether repairs were forgotten, and starts again
// from what arrives next.
func (r *learnRepairs) takeOverflow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.overflow
	if o {
		r.m, r.size, r.overflow = nil, 0, false
	}
	return o
}

// reset forgets every repair (the node votes: its sync is over).
func (r *learnRepairs) reset() {
	r.mu.Lock()
	r.m, r.size, r.overflow = nil, 0, false
	r.mu.Unlock()
}
