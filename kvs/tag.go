package kvs

import "encoding/binary"

// Tag orders the versions of one key: (Counter, Writer) compared
// lexicographically. Writer is unique per write operation across the whole
// cluster and across restarts (node id in the top 16 bits, a per-node
// sequence reserved on disk below), so two different values never carry the
// same tag. The zero Tag means "never written".
type Tag struct {
	Counter uint64
	Writer  uint64
}

// TagSize is the encoded size of a Tag.
const TagSize = 16

// Compare returns -1, 0 or +1 as t is lower than, equal to or higher than u.
func (t Tag) Compare(u Tag) int {
	switch {
	case t.Counter < u.Counter:
		return -1
	case t.Counter > u.Counter:
		return 1
	case t.Writer < u.Writer:
		return -1
	case t.Writer > u.Writer:
		return 1
	}
	return 0
}

// IsZero reports whether t is the zero tag (key never written).
func (t Tag) IsZero() bool { return t.Counter == 0 && t.Writer == 0 }

// AppendTag appends the 16-byte big-endian encoding of t to b.
func AppendTag(b []byte, t Tag) []byte {
	b = binary.BigEndian.AppendUint64(b, t.Counter)
	return binary.BigEndian.AppendUint64(b, t.Writer)
}

// DecodeTag decodes a tag from the first 16 bytes of b (len(b) >= 16).
func DecodeTag(b []byte) Tag {
	return Tag{Counter: binary.BigEndian.Uint64(b), Writer: binary.BigEndian.Uint64(b[8:])}
}

// Record flags.
const (
	flagTombstone byte = 1 // the key was deleted at this tag
)

// A stored record is tag(16) | flags(1) | value.
const recordHeader = TagSize + 1
