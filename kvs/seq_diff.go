package kvs

// Divergence scan, node side: two admin RESP commands that let `sdnkvs kvs
// diff` compare DCs by key ranges and digests without pulling values.
//
//	SDNKVS.DIGEST <start> <end>          -> [count, digest, split]
//	SDNKVS.SCAN   <start> <end> <limit>  -> [[key, tag, flags, valuesum], ...]
//
// Ranges are [start, end) of client keys in byte order; an empty end means
// unbounded. digest is SHA-256 over the range's records in key order (key,
// tag, flags, SHA-256 of the value), so two replicas with equal digests hold
// the same records there; split is the key in the middle of the range (nil
// below two keys), where the caller cuts a range whose digests differ.
// valuesum is the first 16 bytes of the value's SHA-256 (values never leave
// the node). Both commands need an authenticated connection: they are
// refused unless the node has a RESP password (--requirepass-file) and the
// connection sent AUTH, so a node never serves a bulk listing to anyone.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/tidwall/redcon"
)

// MaxScanLimit bounds the records of one SDNKVS.SCAN reply.
const MaxScanLimit = 10000

// scanRecords calls fn for every record with start <= key < end (end nil:
// unbounded), in key order, until fn returns false. Slices passed to fn are
// valid only during the call.
func (s *Store) scanRecords(start, end []byte, withValue bool, fn func(key []byte, t Tag, flags byte, val []byte) bool) error {
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{'k'}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(appendUserKey(nil, start)); it.Valid(); it.Next() {
			item := it.Item()
			key := item.Key()[1:]
			if end != nil && bytes.Compare(key, end) >= 0 {
				return nil
			}
			var t Tag
			var flags byte
			var val []byte
			err := item.Value(func(v []byte) error {
				if len(v) < recordHeader {
					return errors.New("kvs: corrupt record")
				}
				t, flags = DecodeTag(v), v[TagSize]
				if withValue {
					val = v[recordHeader:]
				}
				if !fn(key, t, flags, val) {
					return errStopScan
				}
				return nil
			})
			if errors.Is(err, errStopScan) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

var errStopScan = errors.New("stop")

// valueSum is the 16-byte summary of a value that scans report.
func valueSum(v []byte) [16]byte {
	h := sha256.Sum256(v)
	return [16]byte(h[:16])
}

// rangeDigest returns the number of records in [start, end), their digest
// and the middle key.
func (s *Store) rangeDigest(start, end []byte) (count int, digest [32]byte, split []byte, err error) {
	h := sha256.New()
	var b []byte
	err = s.scanRecords(start, end, true, func(key []byte, t Tag, flags byte, val []byte) bool {
		b = binary.BigEndian.AppendUint32(b[:0], uint32(len(key)))
		b = append(b, key...)
		b = AppendTag(b, t)
		b = append(b, flags)
		sum := valueSum(val)
		b = append(b, sum[:]...)
		h.Write(b)
		count++
		return true
	})
	if err != nil || count < 2 {
		return count, [32]byte(h.Sum(nil)), nil, err
	}
	i, mid := 0, count/2
	err = s.scanRecords(start, end, false, func(key []byte, _ Tag, _ byte, _ []byte) bool {
		if i == mid {
			split = append([]byte(nil), key...)
			return false
		}
		i++
		return true
	})
	return count, [32]byte(h.Sum(nil)), split, err
}

func rangeArgs(args [][]byte) (start, end []byte) {
	start = args[1]
	if len(args[2]) > 0 {
		end = args[2]
	}
	return start, end
}

// formatTag renders a tag as "counter:writer" (writer in hex).
func formatTag(t Tag) string {
	return strconv.FormatUint(t.Counter, 10) + ":" + strconv.FormatUint(t.Writer, 16)
}

// adminCmd answers SDNKVS.DIGEST and SDNKVS.SCAN (args[0] is the name).
func (cc *clientConn) adminCmd(out []byte, args [][]byte) []byte {
	name := args[0]
	if !cc.adminAllowed() {
		return appendErr(out, "NOAUTH "+string(appendSafe(nil, name))+" needs an authenticated connection: start the node with --requirepass-file and send AUTH (no unauthenticated bulk listing)")
	}
	st := cc.n.store
	switch {
	case eq(name, "sdnkvs.digest"):
		if len(args) != 3 {
			return cc.arityErr(out, name)
		}
		start, end := rangeArgs(args)
		count, digest, split, err := st.rangeDigest(start, end)
		if err != nil {
			return appendErr(out, "ERR storage: "+err.Error())
		}
		out = redcon.AppendArray(out, 3)
		out = redcon.AppendInt(out, int64(count))
		out = redcon.AppendBulkString(out, hex.EncodeToString(digest[:]))
		if split == nil {
			return redcon.AppendNull(out)
		}
		return redcon.AppendBulk(out, split)
	default: // sdnkvs.scan
		if len(args) != 4 {
			return cc.arityErr(out, name)
		}
		limit, err := strconv.Atoi(string(args[3]))
		if err != nil || limit < 1 || limit > MaxScanLimit {
			return appendErr(out, "ERR limit must be 1.."+strconv.Itoa(MaxScanLimit))
		}
		start, end := rangeArgs(args)
		var recs []byte
		n := 0
		err = st.scanRecords(start, end, true, func(key []byte, t Tag, flags byte, val []byte) bool {
			sum := valueSum(val)
			recs = redcon.AppendArray(recs, 4)
			recs = redcon.AppendBulk(recs, key)
			recs = redcon.AppendBulkString(recs, formatTag(t))
			recs = redcon.AppendInt(recs, int64(flags))
			recs = redcon.AppendBulkString(recs, hex.EncodeToString(sum[:]))
			n++
			return n < limit
		})
		if err != nil {
			return appendErr(out, "ERR storage: "+err.Error())
		}
		out = redcon.AppendArray(out, n)
		return append(out, recs...)
	}
}

// adminAllowed reports whether the connection may use the admin commands:
// the node has a RESP password and the connection authenticated.
func (cc *clientConn) adminAllowed() bool { return cc.n.cfg.RequirePass != nil && cc.authed }
