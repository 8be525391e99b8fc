package kvs

// The change index (docs/design-lifecycle.md, "Store side"): one Badger
// entry per key, ordered by the tag of the key's current record,
//
//	'c' | tag(16) | key  ->  flags(1) | vlen u32 | value if vlen <= changeInlineMax
//
// maintained by the committer in the same transaction as the record (the
// superseded record's entry is deleted), so "every record with tag above a
// cursor, in tag order" is one prefix scan. A small value is kept in its
// entry as well (version 2), so a catch-up source sends small records from
// the scan alone, without a point read per record: on a 1M-key copy the
// point reads were nearly half of the source's CPU. A store that predates
// the index, or holds version 1 (no "change-index" marker of this version in
// its meta records), gets it built at open.

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

const (
	changePrefix    = 'c'
	changeIndexMeta = "change-index"
	changeIndexVer  = "2"
	changeValLen    = 1 + 4
	// changeInlineMax is the largest value kept in its index entry: the
	// entry then costs the value's bytes twice, bounded at 128 B a key.
	changeInlineMax = 128
)

// appendChangeKey appends the index key of (t, key).
func appendChangeKey(b []byte, t Tag, key []byte) []byte {
	b = append(b, changePrefix)
	b = AppendTag(b, t)
	return append(b, key...)
}

// appendChangeVal appends the index value: the record's flags and value
// length, and the value itself when it is at most changeInlineMax bytes.
func appendChangeVal(b []byte, flags byte, val []byte) []byte {
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(val)))
	if len(val) <= changeInlineMax {
		b = append(b, val...)
	}
	return b
}

// changeEntry is one index entry; key and val alias the iterator's buffer
// in callbacks. inline: val is the record's value (vlen <= changeInlineMax;
// only in entries read from this node's own index).
type changeEntry struct {
	tag    Tag
	key    []byte
	flags  byte
	vlen   int
	val    []byte
	inline bool
}

// ensureChangeIndex builds the index of a store that has none (the marker
// is written after the whole index, so an interrupted build starts over).
func (s *Store) ensureChangeIndex() error {
	v, err := s.GetMeta(changeIndexMeta)
	if err != nil {
		return fmt.Errorf("kvs: read change-index marker: %w", err)
	}
	if v == changeIndexVer {
		return nil
	}
	if err := s.db.DropPrefix([]byte{changePrefix}); err != nil {
		return fmt.Errorf("kvs: clear change index: %w", err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	var kb, vb []byte
	err = s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{'k'}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var t Tag
			if err := item.Value(func(v []byte) error {
				if len(v) < recordHeader {
					return errCorruptRecord
				}
				t = DecodeTag(v)
				vb = appendChangeVal(vb[:0], v[TagSize], v[recordHeader:])
				return nil
			}); err != nil {
				return err
			}
			kb = appendChangeKey(kb[:0], t, item.Key()[1:])
			if err := wb.Set(append([]byte(nil), kb...), append([]byte(nil), vb...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		s.noteDamage(err)
		return fmt.Errorf("kvs: build change index: %w", err)
	}
	return s.PutMeta(changeIndexMeta, changeIndexVer)
}

// changesAfter calls fn for index entries with tag > cursor in tag order
// (the entry's key and val are valid until fn returns),
// until fn returns false or maxEntries entries were passed. It never stops
// inside a group of entries with equal tags (one MSET's keys share a tag),
// so a caller may treat the last passed tag as complete. more reports
// whether entries remain.
func (s *Store) changesAfter(cursor Tag, maxEntries int, fn func(e *changeEntry) bool) (more bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{changePrefix}
		it := txn.NewIterator(opts)
		defer it.Close()
		seek := appendChangeKey(nil, cursor, nil)
		n := 0
		var last Tag
		var vbuf []byte
		stopped := false
		for it.Seek(seek); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) < 1+TagSize {
				return errCorruptRecord
			}
			var e changeEntry
			e.tag = DecodeTag(k[1:])
			if e.tag.Compare(cursor) <= 0 {
				continue
			}
			if stopped || n >= maxEntries {
				if e.tag != last {
					more = true
					return nil
				}
			}
			e.key = k[1+TagSize:]
			v, err := item.ValueCopy(vbuf[:0])
			if err != nil {
				return err
			}
			vbuf = v
			if len(v) < changeValLen {
				return errCorruptRecord
			}
			e.flags, e.vlen = v[0], int(binary.BigEndian.Uint32(v[1:]))
			e.inline = e.vlen <= changeInlineMax
			want := changeValLen
			if e.inline {
				want += e.vlen
			}
			if len(v) != want {
				return errCorruptRecord
			}
			e.val = v[changeValLen:]
			n++
			last = e.tag
			if !fn(&e) {
				stopped = true
			}
		}
		return nil
	})
	if err != nil {
		s.noteDamage(err)
	}
	return more, err
}

// countChangesAfter counts index entries with tag > cursor, stopping at
// limit (the catch-up's remaining-records estimate).
func (s *Store) countChangesAfter(cursor Tag, limit int) (int, error) {
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{changePrefix}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(appendChangeKey(nil, cursor, nil)); it.Valid() && n < limit; it.Next() {
			k := it.Item().Key()
			if len(k) >= 1+TagSize && DecodeTag(k[1:]).Compare(cursor) <= 0 {
				continue
			}
			n++
		}
		return nil
	})
	return n, err
}

// errIndexMismatch is returned by checkChangeIndex.
var errIndexMismatch = errors.New("kvs: change index differs from the records")

// checkChangeIndex verifies that the index holds exactly one entry (tag,
// key, flags, vlen) per record (tests and diagnostics).
func (s *Store) checkChangeIndex() error {
	type ent struct {
		tag   Tag
		flags byte
		vlen  int
		val   string // inline values only
	}
	recs := map[string]ent{}
	err := s.scanRecords(nil, nil, true, func(key []byte, t Tag, flags byte, val []byte) bool {
		r := ent{t, flags, len(val), ""}
		if len(val) <= changeInlineMax {
			r.val = string(val)
		}
		recs[string(key)] = r
		return true
	})
	if err != nil {
		return err
	}
	seen := 0
	var bad error
	_, err = s.changesAfter(Tag{}, 1<<62, func(e *changeEntry) bool {
		r, ok := recs[string(e.key)]
		if !ok || r != (ent{e.tag, e.flags, e.vlen, string(e.val)}) {
			bad = fmt.Errorf("%w: entry %v %q (record %+v, present %v)", errIndexMismatch, e.tag, e.key, r, ok)
			return false
		}
		seen++
		return true
	})
	if err != nil {
		return err
	}
	if bad != nil {
		return bad
	}
	if seen != len(recs) {
		return fmt.Errorf("%w: %d entries for %d records", errIndexMismatch, seen, len(recs))
	}
	return nil
}
