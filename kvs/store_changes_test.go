package kvs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

// putAll applies puts concurrently from several goroutines (so they share
// commit batches) and waits for all of them.
func putAll(t testing.TB, s *Store, puts []testPut) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed int
	done := completionFunc(func(_ uint64, ok bool, _ Tag) {
		if !ok {
			mu.Lock()
			failed++
			mu.Unlock()
		}
		wg.Done()
	})
	const workers = 4
	for w := 0; w < workers; w++ {
		for i := w; i < len(puts); i += workers {
			wg.Add(1)
		}
	}
	for w := 0; w < workers; w++ {
		go func() {
			for i := w; i < len(puts); i += workers {
				p := puts[i]
				s.Put(p.key, p.tag, p.flags, p.val, 0, done)
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		t.Fatalf("%d puts failed", failed)
	}
}

type testPut struct {
	key   []byte
	tag   Tag
	flags byte
	val   []byte
}

// randomPuts makes n puts over a few keys with random (often repeated or
// lower) tags, tombstones, and values of every size class.
func randomPuts(r *rand.Rand, n, keys int) []testPut {
	out := make([]testPut, n)
	for i := range out {
		p := &out[i]
		p.key = fmt.Appendf(nil, "key-%d", r.IntN(keys))
		p.tag = Tag{Counter: uint64(r.IntN(50) + 1), Writer: uint64(r.IntN(3))}
		switch r.IntN(10) {
		case 0:
			p.flags = flagTombstone
		case 1:
			p.val = bytes.Repeat([]byte{'v'}, 70<<10) // beyond the value threshold
		case 2: // the largest value kept in its index entry, and the next size
			p.val = fmt.Appendf(nil, "%0*d", changeInlineMax+r.IntN(2), r.Uint64())
		default:
			p.val = fmt.Appendf(nil, "v%d", r.Uint64())
		}
	}
	return out
}

// expectedIndex is {(tag, key)} of the records the puts leave behind (max
// tag per key).
func expectedIndex(puts []testPut) []string {
	best := map[string]Tag{}
	for _, p := range puts {
		if p.tag.Compare(best[string(p.key)]) > 0 {
			best[string(p.key)] = p.tag
		}
	}
	var out []string
	for k, t := range best {
		out = append(out, string(AppendTag(nil, t))+k)
	}
	sort.Strings(out)
	return out
}

func indexEntries(t testing.TB, s *Store) []string {
	t.Helper()
	var out []string
	if _, err := s.changesAfter(Tag{}, 1<<30, func(e *changeEntry) bool {
		out = append(out, string(AppendTag(nil, e.tag))+string(e.key))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestChangeIndexProperty: after random put sequences the index holds
// exactly {(tag, key)} for every record, in tag order, with the records'
// flags and value lengths.
func TestChangeIndexProperty(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		s, err := OpenStore(StoreOptions{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		var all []testPut
		for round := 0; round < 3; round++ {
			puts := randomPuts(r, 300, 40)
			putAll(t, s, puts)
			all = append(all, puts...)
			if err := s.checkChangeIndex(); err != nil {
				t.Fatalf("seed %d round %d: %v", seed, round, err)
			}
			got, want := indexEntries(t, s), expectedIndex(all)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("seed %d round %d: index has %d entries, want %d", seed, round, len(got), len(want))
			}
		}
		s.Close()
	}
}

// FuzzChangeIndex drives the store with puts decoded from the input.
func FuzzChangeIndex(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add(bytes.Repeat([]byte{0, 1}, 40))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := OpenStore(StoreOptions{InMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var puts []testPut
		for len(data) >= 3 && len(puts) < 200 {
			p := testPut{key: []byte{'k', data[0] % 8}, tag: Tag{Counter: uint64(data[1]%16 + 1), Writer: uint64(data[2] % 2)}}
			if data[2]&0x80 != 0 {
				p.flags = flagTombstone
			} else {
				p.val = bytes.Repeat([]byte{'x'}, int(data[2]&0x3f))
			}
			puts = append(puts, p)
			data = data[3:]
		}
		putAll(t, s, puts)
		if err := s.checkChangeIndex(); err != nil {
			t.Fatal(err)
		}
		if got, want := indexEntries(t, s), expectedIndex(puts); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("index %q, want %q", got, want)
		}
	})
}

// storeWithPuts opens a store in dir holding 500 random puts over 100 keys.
func storeWithPuts(t *testing.T, dir string, seed uint64) (*Store, []testPut) {
	t.Helper()
	s, err := OpenStore(StoreOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	puts := randomPuts(rand.New(rand.NewPCG(seed, seed)), 500, 100)
	putAll(t, s, puts)
	return s, puts
}

// reopenChecked closes s, opens dir again and checks that the index it
// built holds exactly the puts' records.
func reopenChecked(t *testing.T, s *Store, dir string, puts []testPut) {
	t.Helper()
	s.Close()
	s, err := OpenStore(StoreOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.checkChangeIndex(); err != nil {
		t.Fatal(err)
	}
	if got, want := indexEntries(t, s), expectedIndex(puts); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rebuilt index has %d entries, want %d", len(got), len(want))
	}
}

// TestChangeIndexBuiltForOldStore: a store without the index (as written by
// an older version) gets it built at open.
func TestChangeIndexBuiltForOldStore(t *testing.T) {
	dir := t.TempDir()
	s, puts := storeWithPuts(t, dir, 3)
	// Make it an old store: no index, no marker.
	if err := s.db.DropPrefix([]byte{changePrefix}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMeta(changeIndexMeta, ""); err != nil {
		t.Fatal(err)
	}
	if n := len(indexEntries(t, s)); n != 0 {
		t.Fatalf("index not dropped: %d entries", n)
	}
	reopenChecked(t, s, dir, puts)
}

// TestChangeIndexV1Rebuilt: a store whose index predates inline values
// (version 1: flags and length only) gets it rebuilt at open, with the
// small values in their entries; the old entries do not pass for the new
// format.
func TestChangeIndexV1Rebuilt(t *testing.T) {
	dir := t.TempDir()
	s, puts := storeWithPuts(t, dir, 5)
	// Rewrite every entry as version 1 wrote it.
	wb := s.db.NewWriteBatch()
	inline := 0
	if _, err := s.changesAfter(Tag{}, 1<<30, func(e *changeEntry) bool {
		if e.inline {
			inline++
		}
		k := appendChangeKey(nil, e.tag, e.key)
		v := binary.BigEndian.AppendUint32([]byte{e.flags}, uint32(e.vlen))
		if err := wb.Set(k, v); err != nil {
			t.Fatal(err)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if inline == 0 {
		t.Fatal("no entry carried its value")
	}
	if err := s.PutMeta(changeIndexMeta, "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.checkChangeIndex(); err == nil {
		t.Fatal("version 1 entries read as version 2")
	}
	reopenChecked(t, s, dir, puts)
}

// TestChangesAfterPaging: pages from a cursor never split a group of equal
// tags, and chaining pages by their last tag visits every entry once.
func TestChangesAfterPaging(t *testing.T) {
	s, err := OpenStore(StoreOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var puts []testPut
	for i := 0; i < 100; i++ {
		// Groups of 1..4 keys share a tag, as one MSET's keys do.
		puts = append(puts, testPut{key: fmt.Appendf(nil, "k%03d", i), tag: Tag{Counter: uint64(i/4*4 + 10), Writer: 1}, val: []byte("v")})
	}
	putAll(t, s, puts)
	if n, err := s.countChangesAfter(Tag{Counter: 10, Writer: 1}, 1000); err != nil || n != 96 {
		t.Fatalf("count above the first group = %d, %v; want 96", n, err)
	}
	if n, _ := s.countChangesAfter(Tag{}, 50); n != 50 {
		t.Fatalf("capped count = %d, want 50", n)
	}
	var cursor Tag
	seen := 0
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		var last Tag
		n := 0
		more, err := s.changesAfter(cursor, 3, func(e *changeEntry) bool {
			if e.tag.Compare(cursor) <= 0 {
				t.Fatalf("entry %v not above cursor %v", e.tag, cursor)
			}
			last = e.tag
			n++
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if n%4 != 0 {
			t.Fatalf("page of %d entries splits a group of 4 equal tags", n)
		}
		seen += n
		if !more {
			break
		}
		cursor = last
	}
	if seen != 100 {
		t.Fatalf("visited %d entries, want 100", seen)
	}
}

// TestChangeIndexAfterRepair: a wiped node repairs through the learners'
// whole-store copy (syncFrom), and its change index matches its records.
func TestChangeIndexAfterRepair(t *testing.T) {
	c := testCluster(t, 3, 2, 2*time.Second)
	fill(t, c, 300)
	wipe(t, c, 1)
	waitVoter(t, c, 1)
	for i := 0; i < 3; i++ {
		if err := c.Node(i).store.checkChangeIndex(); err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
	if n := len(indexEntries(t, c.Node(1).store)); n < 300 {
		t.Fatalf("repaired node's index has %d entries, want 300", n)
	}
}
