package kvs

// Store housekeeping: guarded Badger open, damage handling, the data-set
// marker, the full scan used by repair (sync.go), and the writer clock.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// openBadger opens Badger, turning a panic (a truncated table makes Badger
// panic at open) into an error, so a damaged directory cannot crash-loop
// the node.
func openBadger(opts badger.Options) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: badger panicked at open: %v", errDamaged, r)
		}
	}()
	return badger.Open(opts)
}

// errDamaged marks storage damage (checksums, corrupt records, a store
// that cannot open).
var errDamaged = errors.New("kvs: storage damaged")

// quarantine moves Badger's files in dir into a new dir/damaged-<time>
// folder, leaving identity.json and writer-seq, so that a fresh store can be
// opened and repaired from peers. It returns the folder.
func quarantine(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "damaged-"+time.Now().UTC().Format("20060102T150405.000000000"))
	if err := os.Mkdir(dst, 0o755); err != nil {
		return "", err
	}
	for _, e := range ents {
		name := e.Name()
		if name == identityFile || strings.HasPrefix(name, "writer-seq") || strings.HasPrefix(name, "damaged-") {
			continue
		}
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(dst, name)); err != nil {
			return "", err
		}
	}
	return dst, nil
}

// isDamage reports whether err means the stored data is damaged.
func isDamage(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errDamaged) || errors.Is(err, errCorruptRecord) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "checksum") || strings.Contains(s, "corrupt") || strings.Contains(s, "truncat") ||
		strings.Contains(s, "MANIFEST") || strings.Contains(s, "manifest")
}

var errCorruptRecord = errors.New("kvs: corrupt record")

func (s *Store) noteDamage(err error) {
	if !isDamage(err) {
		return
	}
	s.Damaged.Add(1)
	if s.onDamage != nil {
		s.onDamage(err)
	}
}

const metaPrefix = 'm'

// GetMeta returns an internal record ("" if absent).
func (s *Store) GetMeta(name string) (string, error) {
	var v string
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(append([]byte{metaPrefix}, name...))
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error { v = string(b); return nil })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil
	}
	return v, err
}

// PutMeta stores an internal record and syncs it to disk.
func (s *Store) PutMeta(name, val string) error {
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(append([]byte{metaPrefix}, name...), []byte(val))
	})
	if err == nil && !s.inMemory() {
		err = s.db.Sync()
	}
	return err
}

func (s *Store) inMemory() bool { return s.dir == "" }

// Scan appends the records of keys after `after` (from the first key when
// first) to dst, as keylen(2) key tag(16) flags(1) vlen(4) value, up to
// about max bytes (at least one record). more reports whether keys remain.
func (s *Store) Scan(after []byte, first bool, max int, dst []byte) (out []byte, more bool, err error) {
	out = dst
	err = s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{'k'}
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		start := appendUserKey(nil, after)
		if first {
			start = []byte{'k'}
		}
		for it.Seek(start); it.ValidForPrefix(opts.Prefix); it.Next() {
			item := it.Item()
			k := item.Key()
			if !first && string(k) == string(start) {
				continue
			}
			if len(out)-len(dst) >= max {
				more = true
				return nil
			}
			if err := item.Value(func(v []byte) error {
				if len(v) < recordHeader {
					return errCorruptRecord
				}
				out = binary.BigEndian.AppendUint16(out, uint16(len(k)-1))
				out = append(out, k[1:]...)
				out = append(out, v[:recordHeader]...)
				out = binary.BigEndian.AppendUint32(out, uint32(len(v)-recordHeader))
				out = append(out, v[recordHeader:]...)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.noteDamage(err)
	}
	return out, more, err
}

// scanRecord is one record of a Scan batch; slices alias the batch.
type scanRecord struct {
	key   []byte
	tag   Tag
	flags byte
	val   []byte
}

// appendScanRecord appends one record in the Scan format (key length
// u16 | key | tag | flags | value length u32 | value).
func appendScanRecord(b, key []byte, t Tag, flags byte, val []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	b = append(b, key...)
	b = AppendTag(b, t)
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(val)))
	return append(b, val...)
}

// nextScanRecord decodes the first record of b and returns the rest.
func nextScanRecord(b []byte, r *scanRecord) ([]byte, error) {
	if len(b) < 2 {
		return nil, errBadFrame
	}
	kl := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < kl+recordHeader+4 {
		return nil, errBadFrame
	}
	r.key, b = b[:kl], b[kl:]
	r.tag, r.flags = DecodeTag(b), b[TagSize]
	vl := int(binary.BigEndian.Uint32(b[recordHeader:]))
	b = b[recordHeader+4:]
	if len(b) < vl {
		return nil, errBadFrame
	}
	r.val = b[:vl]
	return b[vl:], nil
}

// writerClock is the writer sequence floor: 10 µs ticks since 2025-01-01
// (2^48 ticks last 89 years).
func writerClock() uint64 {
	d := time.Since(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if d < 0 {
		return 0
	}
	return uint64(d / (10 * time.Microsecond))
}

// verifyTables checks every SST in dir (index and every block checksum)
// before Badger opens them: Badger's own open-time check panics in a
// goroutine of its own on a damaged block or a truncated table, which would
// crash the process, while here a panic is caught and reported as damage.
func verifyTables(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	for _, p := range paths {
		if err := verifyTable(p); err != nil {
			return fmt.Errorf("%w: table %s: %v", errDamaged, filepath.Base(p), err)
		}
	}
	return nil
}

func verifyTable(path string) (err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable: %v", r)
		}
		mf.Close(-1)
	}()
	_, err = table.OpenTable(mf, table.Options{ChkMode: options.OnTableRead, Compression: options.Snappy, BlockSize: 4 << 10, BloomFalsePositive: 0.01})
	return err
}
