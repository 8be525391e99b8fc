package kvs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Store is one replica's durable map key -> (tag, flags, value) over Badger.
//
// Writes go through a single committer goroutine that applies every write
// queued since its last commit in one Badger transaction (group commit):
// a write is stored only if its tag is higher than the stored one, so a
// replica never goes back to a lower tag, and it is acknowledged only after
// the transaction commits. With Sync the commit fsyncs the value log (an
// acknowledged write survives power loss); without it the write is in the
// OS page cache when acknowledged (it survives a crash of the process, not of
// the machine).
//
// Reads of recently used keys are answered from an in-memory record cache
// that always equals the committed record (see recCache).
//
// Store is safe for concurrent use.
type Store struct {
	db   *badger.DB
	dir  string
	sync bool

	mu         sync.Mutex
	drained    *sync.Cond // signalled when the committer takes the queue
	queueLimit int        // bytes queued before Put waits; 0: no limit
	closing    bool
	cur        *commitBatch
	spare      *commitBatch
	kick       chan struct{}
	done       chan struct{}
	quit       chan struct{}

	cache *recCache   // newest committed records of recent keys
	bidx  *batchIndex // committer only

	writerMu   sync.Mutex
	writerNext uint64 // next unique writer sequence
	writerEnd  uint64 // end of the block reserved on disk

	Commits atomic.Uint64 // transactions committed
	Writes  atomic.Uint64 // write requests applied (stored or superseded)
	Damaged atomic.Uint64 // reads that found damaged data (checksum mismatch, corrupt record)

	onDamage func(error) // called once per damaged read (set before use)
	full     atomic.Bool // free disk space below the floor: writes refused
}

// completion is told the outcome of a queued write: the tag the replica holds
// for the key afterwards (>= the requested tag) or ok=false on a storage error.
type completion interface {
	writeDone(id uint64, ok bool, held Tag)
}

type commitEntry struct {
	keyOff, keyEnd int // prefixed key in arena
	recEnd         int // record follows the key: [keyEnd, recEnd)
	tag            Tag
	id             uint64
	to             completion
	stored         bool // set in the transaction (not superseded)
	// repair (PutRepair): the record replaces the replica's whatever its
	// tag when that is at or below bound; a zero tag removes the key.
	repair  bool
	removed bool // set in the transaction: the key was removed
	bound   Tag
	// bulk (PutBulk): a copied record, cached only when its key already is
	// (a catch-up or a learner's sync would otherwise evict every hot key
	// and pay an eviction per record).
	bulk bool
}

type commitBatch struct {
	entries []commitEntry
	arena   []byte
}

// StoreOptions configure OpenStore.
type StoreOptions struct {
	Dir      string
	Sync     bool // fsync every commit
	InMemory bool // no files (tests only)
	Queue    int  // bytes of queued writes before Put waits (backpressure); 0: no limit
}

const writerBlock = 1 << 20

// valueThreshold is Badger's value threshold (values at least this long go
// to the value log) and txnEntryOverhead a bound on Badger's per-entry
// size estimate beyond key and inline value (metas, version, pointer).
const (
	valueThreshold   = 64 << 10
	txnEntryOverhead = 32
)

// OpenStore opens (or creates) a replica store with Badger tuned small so
// that many nodes share one machine (8 MiB memtables, 2 of them, 8 MiB block
// and index caches, 2 compactors).
func OpenStore(o StoreOptions) (*Store, error) {
	opts := badger.DefaultOptions(o.Dir).
		WithInMemory(o.InMemory).
		WithSyncWrites(o.Sync).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(8 << 20).
		WithNumCompactors(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(64 << 20).
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1).
		// Damage is detected, never served as "not found": every table is
		// verified before open (verifyTables), every block and every value
		// on read.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true).
		// Badger's expvar counters are process-wide (several nodes share
		// a process in tests and the testbed, so they mix), nothing reads
		// them, and updating them was 2% of a joining DC's CPU in a
		// 1M-key catch-up (a sync.Map lookup per bloom filter check).
		WithMetricsEnabled(false).
		WithLogger(nil)
	if o.InMemory {
		opts.Dir, opts.ValueDir = "", ""
	}
	if !o.InMemory {
		if err := verifyTables(o.Dir); err != nil {
			return nil, err
		}
	}
	db, err := openBadger(opts)
	if err != nil {
		return nil, fmt.Errorf("kvs: open badger in %q: %w", o.Dir, err)
	}
	s := &Store{
		db: db, dir: o.Dir, sync: o.Sync,
		cur: &commitBatch{}, spare: &commitBatch{},
		cache: newRecCache(cacheMaxEntries, cacheMaxBytes), bidx: newBatchIndex(),
		kick: make(chan struct{}, 1), done: make(chan struct{}), quit: make(chan struct{}),
		queueLimit: o.Queue,
	}
	s.drained = sync.NewCond(&s.mu)
	if err := s.ensureChangeIndex(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.reserveWriters(); err != nil {
		db.Close()
		return nil, err
	}
	go s.commitLoop()
	return s, nil
}

// Close stops the committer (pending writes are committed first) and closes
// Badger.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closing = true
	s.drained.Broadcast()
	s.mu.Unlock()
	close(s.quit)
	<-s.done
	return s.db.Close()
}

// NextWriter returns a writer sequence (48 bits) never returned before by
// this replica, across restarts: blocks of sequences are reserved in a file
// (fsynced) before use.
func (s *Store) NextWriter() (uint64, error) {
	s.writerMu.Lock()
	defer s.writerMu.Unlock()
	if s.writerNext >= s.writerEnd {
		if err := s.reserveWritersLocked(); err != nil {
			return 0, err
		}
	}
	w := s.writerNext
	s.writerNext++
	return w, nil
}

func (s *Store) reserveWriters() error {
	s.writerMu.Lock()
	defer s.writerMu.Unlock()
	return s.reserveWritersLocked()
}

func (s *Store) reserveWritersLocked() error {
	if s.dir == "" {
		start := max(s.writerEnd, writerClock())
		s.writerNext, s.writerEnd = start, start+writerBlock
		return nil
	}
	path := filepath.Join(s.dir, "writer-seq")
	var start uint64
	if b, err := os.ReadFile(path); err == nil && len(b) == 8 {
		start = binary.BigEndian.Uint64(b)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kvs: read %s: %w", path, err)
	}
	if start < s.writerEnd {
		start = s.writerEnd
	}
	// A lost writer-seq file must not restart the sequence: never start
	// below the clock (10 µs ticks since 2025), which moves faster than
	// the sequence at up to 100,000 writes per second per node.
	if t := writerClock(); start < t {
		start = t
	}
	end := start + writerBlock
	if end >= 1<<48 {
		return errors.New("kvs: writer sequence space exhausted")
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err == nil {
		_, err = f.Write(binary.BigEndian.AppendUint64(nil, end))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("kvs: reserve writer ids: %w", err)
	}
	s.writerNext, s.writerEnd = start, end
	return nil
}

// userKey is the Badger key of a client key (a prefix keeps the empty key
// legal and leaves room for internal keys).
func appendUserKey(b, key []byte) []byte {
	b = append(b, 'k')
	return append(b, key...)
}

// Get returns the replica's record for key: appends the value to dst when
// withValue. A key never written has the zero tag. Recently used keys are
// answered from the record cache (always equal to the committed record).
func (s *Store) Get(key []byte, withValue bool, dst []byte) (t Tag, flags byte, val []byte, err error) {
	t, flags, val, hit, epoch := s.cache.get(key, withValue, dst)
	if hit {
		return t, flags, val, nil
	}
	t, flags, val, err = s.dbGet(key, withValue, dst)
	if err == nil {
		s.cache.fill(key, epoch, t, flags, withValue, val[len(dst):])
	}
	return t, flags, val, err
}

// getMany calls fn with each key's record (as Get, with its value when
// withValue), in order, reading in one Badger transaction: a catch-up page
// reads thousands of records at once, and a transaction per record cost
// more than the reads. Records not in the record cache are not added to it
// (a bulk read must not evict the hot keys). val is valid only during fn.
func (s *Store) getMany(keys [][]byte, withValue bool, fn func(i int, t Tag, flags byte, val []byte) error) error {
	var kb, vb []byte
	err := s.db.View(func(txn *badger.Txn) error {
		for i, key := range keys {
			t, flags, val, hit, _ := s.cache.get(key, withValue, vb[:0])
			if !hit {
				kb = appendUserKey(kb[:0], key)
				var err error
				t, flags, val, err = txnRecord(txn, kb, withValue, vb[:0])
				if errors.Is(err, badger.ErrKeyNotFound) {
					t, flags, val = Tag{}, 0, vb[:0]
				} else if err != nil {
					return err
				}
			}
			vb = val
			if err := fn(i, t, flags, val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopGetMany) {
		s.noteDamage(err)
	}
	return err
}

// errStopGetMany is for a getMany callback's own errors (not damage).
var errStopGetMany = errors.New("stop")

func (s *Store) dbGet(key []byte, withValue bool, dst []byte) (t Tag, flags byte, val []byte, err error) {
	var kb [256]byte
	k := appendUserKey(kb[:0], key)
	val = dst
	err = s.db.View(func(txn *badger.Txn) error {
		t, flags, val, err = txnRecord(txn, k, withValue, dst)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		err = nil
	} else if err != nil {
		s.noteDamage(err)
	}
	return t, flags, val, err
}

// txnRecord reads the record of prefixed key k in txn, appending its
// value to dst when withValue (badger.ErrKeyNotFound when there is none).
func txnRecord(txn *badger.Txn, k []byte, withValue bool, dst []byte) (t Tag, flags byte, val []byte, err error) {
	val = dst
	item, err := txn.Get(k)
	if err != nil {
		return t, flags, val, err
	}
	err = item.Value(func(v []byte) error {
		if len(v) < recordHeader {
			return errCorruptRecord
		}
		t, flags = DecodeTag(v), v[TagSize]
		if withValue {
			val = append(val, v[recordHeader:]...)
		}
		return nil
	})
	return t, flags, val, err
}

// Put queues a write of (t, flags, val) for key; to.writeDone(id, ...) is
// called from the committer goroutine once it is durable (or failed). key and
// val are copied.
func (s *Store) Put(key []byte, t Tag, flags byte, val []byte, id uint64, to completion) {
	s.put(commitEntry{tag: t, id: id, to: to}, key, flags, val)
}

// PutBulk is Put for a copied record (a catch-up page, a learner's sync):
// the same rule, but the record enters the record cache only if its key is
// cached already, so a bulk copy neither evicts the hot keys nor pays an
// eviction per record.
func (s *Store) PutBulk(key []byte, t Tag, flags byte, val []byte, id uint64, to completion) {
	s.put(commitEntry{tag: t, id: id, to: to, bulk: true}, key, flags, val)
}

// PutRepair queues a repair of key to the source DC's record (t, flags,
// val) (docs/design-lifecycle.md, "Verify pass"): if the replica's record
// has a tag at or below bound, or there is none, the given record
// replaces it even when its tag is lower or equal (a corrupt or forged
// record), and a zero t removes the key (the source never held it); a
// record above bound is newer than the comparison and is kept unless t is
// higher still, as for Put. to.writeDone's held tag is the replica's tag
// afterwards (zero: removed).
func (s *Store) PutRepair(key []byte, t Tag, flags byte, val []byte, bound Tag, id uint64, to completion) {
	s.put(commitEntry{tag: t, id: id, to: to, repair: true, bound: bound}, key, flags, val)
}

// put queues e (tag, id, completion and mode set) for key's record.
func (s *Store) put(e commitEntry, key []byte, flags byte, val []byte) {
	if s.full.Load() {
		e.to.writeDone(e.id, false, Tag{}) // no disk space: refused, never half-written
		return
	}
	s.mu.Lock()
	// Backpressure: a writer waits while the queue is over its limit (the
	// committer is behind), so a flood of writes from a peer or client
	// slows its own connection instead of growing memory.
	for s.queueLimit > 0 && len(s.cur.arena) > s.queueLimit && !s.closing {
		s.drained.Wait()
	}
	b := s.cur
	e.keyOff = len(b.arena)
	b.arena = appendUserKey(b.arena, key)
	e.keyEnd = len(b.arena)
	b.arena = AppendTag(b.arena, e.tag)
	b.arena = append(b.arena, flags)
	b.arena = append(b.arena, val...)
	e.recEnd = len(b.arena)
	b.entries = append(b.entries, e)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Store) commitLoop() {
	defer close(s.done)
	for {
		select {
		case <-s.kick:
		case <-s.quit:
			s.mu.Lock()
			n := len(s.cur.entries)
			s.mu.Unlock()
			if n == 0 {
				return
			}
		}
		s.mu.Lock()
		b := s.cur
		s.cur, s.spare = s.spare, b
		s.drained.Broadcast()
		s.mu.Unlock()
		if len(b.entries) > 0 {
			s.apply(b)
		}
		b.entries = b.entries[:0]
		b.arena = b.arena[:0]
	}
}

// apply commits one batch and answers its writers. After it, b.entries[i].tag
// is the tag the replica holds for entry i's key.
func (s *Store) apply(b *commitBatch) {
	txn := s.db.NewTransaction(true)
	idx := s.bidx
	clear(idx.m)
	var err error
	var txnCount, txnSize int64
	// fit makes room for n more entries of size bytes: it commits the
	// transaction first if they might not fit in it.
	fit := func(n, size int64) error {
		if txnCount+n >= s.db.MaxBatchCount() || txnSize+size >= s.db.MaxBatchSize() {
			if err := txn.Commit(); err != nil {
				return err
			}
			s.Commits.Add(1)
			txn = s.db.NewTransaction(true)
			txnCount, txnSize = 0, 0
		}
		txnCount += n
		txnSize += size
		return nil
	}
	for i := range b.entries {
		e := &b.entries[i]
		k := b.arena[e.keyOff:e.keyEnd:e.keyEnd]
		rec := b.arena[e.keyEnd:e.recEnd:e.recEnd]
		e.stored, e.removed = false, false
		// The current tag: an earlier entry of this batch for the same key,
		// else the record cache, else Badger (which sees this transaction's
		// own writes, so a hash collision is harmless).
		var cur Tag
		h := maphash.Bytes(idx.seed, k)
		known := false
		if j, ok := idx.m[h]; ok {
			p := &b.entries[j]
			if bytes.Equal(b.arena[p.keyOff:p.keyEnd], k) {
				cur, known = p.tag, true
			}
		} else if ct, _, _, hit, _ := s.cache.get(k[1:], false, nil); hit {
			cur, known = ct, true
		}
		if !known {
			item, gerr := txn.Get(k)
			if gerr == nil {
				gerr = item.Value(func(v []byte) error {
					if len(v) >= TagSize {
						cur = DecodeTag(v)
					}
					return nil
				})
			}
			if gerr != nil && !errors.Is(gerr, badger.ErrKeyNotFound) {
				err = gerr
				break
			}
		}
		idx.m[h] = i
		force := e.repair && cur.Compare(e.bound) <= 0
		if force && e.tag.IsZero() {
			// Repair to "no record": remove the key and its index entry.
			if !cur.IsZero() {
				dk := appendChangeKey(make([]byte, 0, 1+TagSize+len(k)), cur, k[1:])
				if err = fit(2, int64(len(k)+len(dk))+2*txnEntryOverhead); err != nil {
					break
				}
				if err = txn.Delete(k); err == nil {
					err = txn.Delete(dk)
				}
				if err != nil {
					break
				}
				e.removed = true
			}
			continue
		}
		if !force && e.tag.Compare(cur) <= 0 {
			e.tag = cur // already holds an equal or newer version
			continue
		}
		// The record and its change-index entries (docs/design-lifecycle.md)
		// go into one transaction: commit first if they might not fit.
		ik := appendChangeKey(make([]byte, 0, 1+TagSize+len(k)), e.tag, k[1:])
		iv := appendChangeVal(make([]byte, 0, changeValLen+min(len(rec)-recordHeader, changeInlineMax)), rec[TagSize], rec[recordHeader:])
		var dk []byte
		if !cur.IsZero() {
			dk = appendChangeKey(make([]byte, 0, 1+TagSize+len(k)), cur, k[1:])
		}
		if err = fit(3, int64(len(k)+min(len(rec), valueThreshold)+len(ik)+len(iv)+len(dk))+3*txnEntryOverhead); err != nil {
			break
		}
		if err = txn.Set(k, rec); err == nil {
			if dk != nil {
				err = txn.Delete(dk)
			}
			if err == nil {
				err = txn.Set(ik, iv)
			}
		}
		if err != nil {
			break
		}
		e.stored = true
	}
	if err == nil {
		err = txn.Commit()
		s.Commits.Add(1)
	} else {
		txn.Discard()
	}
	ok := err == nil
	// Publish the committed records (or forget the batch's keys when the
	// outcome is unknown) before anyone is acknowledged.
	c := s.cache
	c.mu.Lock()
	for i := range b.entries {
		e := &b.entries[i]
		key := b.arena[e.keyOff+1 : e.keyEnd]
		switch {
		case !ok, e.removed:
			c.forgetLocked(key)
		case e.stored && (!e.bulk || c.m[string(key)] != nil):
			rec := b.arena[e.keyEnd:e.recEnd]
			c.setLocked(key, e.tag, rec[TagSize], true, rec[recordHeader:])
		}
	}
	c.epoch++
	c.mu.Unlock()
	s.Writes.Add(uint64(len(b.entries)))
	for i := range b.entries {
		e := &b.entries[i]
		e.to.writeDone(e.id, ok, e.tag)
		e.to = nil
	}
}
