// Package orderwire is the codec of the order stream: the side connection
// on which the middlebox (the sequencer) tells every DC node which position G
// in one global order each byte range of a sequenced client flow has.
//
//	middlebox ──HELLO, OPEN, STAMP, CLOSE, CATCHUP, STOP──▶ node
//	middlebox ◀──────────APPLIED, PROGRESS──────────────── node
//
// CATCHUP, STOP and PROGRESS drive a DC's catch-up after an outage
// (docs/design-lifecycle.md): the middlebox asks one node of a joining DC
// to copy, from a current DC, every record whose tag is above a cursor,
// and the node reports how far it got.
//
// Every frame is type u8 | body length u16 | body, integers big-endian (see
// docs/design-sequencer.md). Body lengths are fixed per type and checked
// before a body is read, so a peer can never make the reader buffer more
// than MaxFrame bytes. The package is pure: encoding appends to or fills
// caller buffers and decoding reads from them, without allocating.
package orderwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Type is a frame type.
type Type uint8

// Frame types. HELLO, OPEN, STAMP and CLOSE flow from the middlebox to a
// node, APPLIED from a node to the middlebox.
const (
	Hello   Type = 1
	Open    Type = 2
	Stamp   Type = 3
	Close   Type = 4
	Catchup Type = 5
	Stop    Type = 6
	Applied Type = 16
	// Progress reports a catch-up job's progress (node → middlebox).
	Progress Type = 17
)

// NameLen is the length of a DC name on the wire (NUL-padded).
const NameLen = 16

// Catch-up job states carried by PROGRESS.
const (
	JobRunning uint8 = 1 // copying; Cursor is the last tag copied
	JobDone    uint8 = 2 // reached the end of the source's change index once
	JobFailed  uint8 = 3 // gave up (no source reachable, ...); the middlebox retries
)

// Sizes of the wire format.
const (
	HeaderLen = 3           // type u8 | body length u16
	FlowLen   = 8           // client IPv4 [4] | client port u16 | node port u16
	MaxBody   = 8 + 1 + 5*8 // the largest body, PROGRESS's
	MaxFrame  = HeaderLen + MaxBody
)

// Errors returned by Decode. ErrShort means "read more bytes and retry"; the
// other errors mean the stream is corrupt and the connection must be closed.
var (
	ErrShort       = errors.New("orderwire: frame incomplete")
	ErrUnknownType = errors.New("orderwire: unknown frame type")
	ErrBodyLength  = errors.New("orderwire: wrong body length for frame type")
	ErrEmptyRange  = errors.New("orderwire: stamp range empty (start >= end)")
	ErrBufferSmall = errors.New("orderwire: buffer too small for frame")
	ErrBadName     = errors.New("orderwire: DC name empty or NUL inside its padding")
	ErrBadState    = errors.New("orderwire: unknown catch-up job state")
	ErrBadFlags    = errors.New("orderwire: unknown catch-up flags")
)

// Flow names one forked client connection as a node sees it: the client's
// address and port (the middlebox rewrites only the destination) and the
// node's local port. It is a packed, comparable, pointer-free map key.
type Flow struct {
	ClientIP   [4]byte
	ClientPort uint16
	NodePort   uint16
}

// FlowOf builds the Flow of a connection from its remote (client) address
// and local port. ok is false if the client address is not IPv4.
func FlowOf(client netip.AddrPort, nodePort uint16) (f Flow, ok bool) {
	a := client.Addr().Unmap()
	if !a.Is4() {
		return Flow{}, false
	}
	return Flow{ClientIP: a.As4(), ClientPort: client.Port(), NodePort: nodePort}, true
}

func (f Flow) String() string {
	return fmt.Sprintf("%s:%d->:%d", netip.AddrFrom4(f.ClientIP), f.ClientPort, f.NodePort)
}

// Frame is one decoded frame. Which fields are meaningful depends on Type:
//
//	Hello:   Epoch, GFloor
//	Open:    Flow
//	Stamp:   Flow, Start, End, G   (bytes [Start, End) of the client stream have G)
//	Close:   Flow
//	Applied: G                     (highest G the node has applied)
//	Catchup: Job, G, W, Source, Flags, Bound
//	                               (copy from DC Source every record whose
//	                                tag is above (G, W) in tag order; with
//	                                CatchupVerify in Flags, then compare the
//	                                whole store with the source's by digests
//	                                and repair every record whose tag is at
//	                                or below Bound, a sequencer G, to the
//	                                source's: docs/design-lifecycle.md,
//	                                "Verify pass")
//	Stop:    Job                   (stop that job)
//	Progress: Job, State, Keys, Bytes, Remaining, G, W
//	                               (records and bytes copied so far, an
//	                                estimate of records left or ^0 if
//	                                unknown, and the cursor: every record
//	                                at or below tag (G, W) has been copied)
type Frame struct {
	Type   Type
	Flow   Flow
	Epoch  uint64
	GFloor uint64
	Start  uint64
	End    uint64
	G      uint64
	// Catch-up fields.
	Job       uint64
	W         uint64
	Source    [NameLen]byte
	State     uint8
	Keys      uint64
	Bytes     uint64
	Remaining uint64
	Flags     uint8  // Catchup: CatchupVerify
	Bound     uint64 // Catchup with CatchupVerify: records at or below this G are the source's
}

// CatchupVerify in a CATCHUP frame's Flags asks for a verify pass.
const CatchupVerify uint8 = 1

// SetSource sets f.Source to name; it fails if name is empty, longer than
// NameLen bytes or holds a NUL.
func (f *Frame) SetSource(name string) error {
	if name == "" || len(name) > NameLen {
		return fmt.Errorf("orderwire: DC name %q must be 1 to %d bytes", name, NameLen)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return fmt.Errorf("orderwire: DC name %q holds a NUL", name)
		}
	}
	f.Source = [NameLen]byte{}
	copy(f.Source[:], name)
	return nil
}

// SourceName returns f.Source without its NUL padding.
func (f *Frame) SourceName() string {
	n := 0
	for n < NameLen && f.Source[n] != 0 {
		n++
	}
	return string(f.Source[:n])
}

// BodyLen returns the fixed body length of frame type t, and false for an
// unknown type.
func BodyLen(t Type) (int, bool) {
	switch t {
	case Hello:
		return 16, true
	case Open, Close:
		return FlowLen, true
	case Stamp:
		return FlowLen + 24, true
	case Applied, Stop:
		return 8, true
	case Catchup:
		return 8 + 16 + NameLen + 1 + 8, true
	case Progress:
		return 8 + 1 + 5*8, true
	}
	return 0, false
}

// Len returns the encoded length of f, or 0 if f.Type is unknown.
func (f *Frame) Len() int {
	n, ok := BodyLen(f.Type)
	if !ok {
		return 0
	}
	return HeaderLen + n
}

func (f *Frame) check() error {
	if _, ok := BodyLen(f.Type); !ok {
		return fmt.Errorf("%w %d", ErrUnknownType, f.Type)
	}
	if f.Type == Stamp && f.Start >= f.End {
		return ErrEmptyRange
	}
	if f.Type == Catchup && !validName(f.Source[:]) {
		return ErrBadName
	}
	if f.Type == Catchup && f.Flags&^CatchupVerify != 0 {
		return ErrBadFlags
	}
	if f.Type == Progress && (f.State < JobRunning || f.State > JobFailed) {
		return ErrBadState
	}
	return nil
}

// Append appends the encoding of f to dst. It does not allocate if dst has
// room for f.Len() more bytes.
func Append(dst []byte, f *Frame) ([]byte, error) {
	if err := f.check(); err != nil {
		return dst, err
	}
	n := len(dst)
	need := f.Len()
	if cap(dst)-n < need {
		dst = append(dst, make([]byte, need)...)
	} else {
		dst = dst[:n+need]
	}
	put(dst[n:], f)
	return dst, nil
}

// Encode writes f into b and returns the number of bytes written.
func Encode(b []byte, f *Frame) (int, error) {
	if err := f.check(); err != nil {
		return 0, err
	}
	need := f.Len()
	if len(b) < need {
		return 0, ErrBufferSmall
	}
	put(b, f)
	return need, nil
}

func put(b []byte, f *Frame) {
	body, _ := BodyLen(f.Type)
	b[0] = byte(f.Type)
	binary.BigEndian.PutUint16(b[1:], uint16(body))
	p := b[HeaderLen:]
	switch f.Type {
	case Hello:
		binary.BigEndian.PutUint64(p, f.Epoch)
		binary.BigEndian.PutUint64(p[8:], f.GFloor)
	case Open, Close:
		putFlow(p, f.Flow)
	case Stamp:
		putFlow(p, f.Flow)
		binary.BigEndian.PutUint64(p[8:], f.Start)
		binary.BigEndian.PutUint64(p[16:], f.End)
		binary.BigEndian.PutUint64(p[24:], f.G)
	case Applied:
		binary.BigEndian.PutUint64(p, f.G)
	case Stop:
		binary.BigEndian.PutUint64(p, f.Job)
	case Catchup:
		binary.BigEndian.PutUint64(p, f.Job)
		binary.BigEndian.PutUint64(p[8:], f.G)
		binary.BigEndian.PutUint64(p[16:], f.W)
		copy(p[24:], f.Source[:])
		p[24+NameLen] = f.Flags
		binary.BigEndian.PutUint64(p[25+NameLen:], f.Bound)
	case Progress:
		binary.BigEndian.PutUint64(p, f.Job)
		p[8] = f.State
		binary.BigEndian.PutUint64(p[9:], f.Keys)
		binary.BigEndian.PutUint64(p[17:], f.Bytes)
		binary.BigEndian.PutUint64(p[25:], f.Remaining)
		binary.BigEndian.PutUint64(p[33:], f.G)
		binary.BigEndian.PutUint64(p[41:], f.W)
	}
}

// validName reports whether a NUL-padded name is non-empty with no NUL
// before a non-NUL byte.
func validName(b []byte) bool {
	if len(b) == 0 || b[0] == 0 {
		return false
	}
	pad := false
	for _, c := range b {
		if c == 0 {
			pad = true
		} else if pad {
			return false
		}
	}
	return true
}

func putFlow(p []byte, fl Flow) {
	copy(p[:4], fl.ClientIP[:])
	binary.BigEndian.PutUint16(p[4:], fl.ClientPort)
	binary.BigEndian.PutUint16(p[6:], fl.NodePort)
}

func getFlow(p []byte) Flow {
	var fl Flow
	copy(fl.ClientIP[:], p[:4])
	fl.ClientPort = binary.BigEndian.Uint16(p[4:])
	fl.NodePort = binary.BigEndian.Uint16(p[6:])
	return fl
}

// CheckHeader validates a frame header (the first HeaderLen bytes) and
// returns the body length announced, so a reader can refuse a bad frame
// before reading its body.
func CheckHeader(h []byte) (int, error) {
	if len(h) < HeaderLen {
		return 0, ErrShort
	}
	t := Type(h[0])
	want, ok := BodyLen(t)
	if !ok {
		return 0, fmt.Errorf("%w %d", ErrUnknownType, t)
	}
	if got := int(binary.BigEndian.Uint16(h[1:])); got != want {
		return 0, fmt.Errorf("%w: type %d body %d, want %d", ErrBodyLength, t, got, want)
	}
	return want, nil
}

// Decode decodes the frame at the start of b into f and returns its encoded
// length. It returns ErrShort if b holds only part of a frame; any other
// error means b does not start with a valid frame.
func Decode(b []byte, f *Frame) (int, error) {
	body, err := CheckHeader(b)
	if err != nil {
		return 0, err
	}
	if len(b) < HeaderLen+body {
		return 0, ErrShort
	}
	*f = Frame{Type: Type(b[0])}
	p := b[HeaderLen : HeaderLen+body]
	switch f.Type {
	case Hello:
		f.Epoch = binary.BigEndian.Uint64(p)
		f.GFloor = binary.BigEndian.Uint64(p[8:])
	case Open, Close:
		f.Flow = getFlow(p)
	case Stamp:
		f.Flow = getFlow(p)
		f.Start = binary.BigEndian.Uint64(p[8:])
		f.End = binary.BigEndian.Uint64(p[16:])
		f.G = binary.BigEndian.Uint64(p[24:])
		if f.Start >= f.End {
			return 0, ErrEmptyRange
		}
	case Applied:
		f.G = binary.BigEndian.Uint64(p)
	case Stop:
		f.Job = binary.BigEndian.Uint64(p)
	case Catchup:
		f.Job = binary.BigEndian.Uint64(p)
		f.G = binary.BigEndian.Uint64(p[8:])
		f.W = binary.BigEndian.Uint64(p[16:])
		copy(f.Source[:], p[24:])
		if !validName(f.Source[:]) {
			return 0, ErrBadName
		}
		f.Flags = p[24+NameLen]
		f.Bound = binary.BigEndian.Uint64(p[25+NameLen:])
		if f.Flags&^CatchupVerify != 0 {
			return 0, ErrBadFlags
		}
	case Progress:
		f.Job = binary.BigEndian.Uint64(p)
		f.State = p[8]
		f.Keys = binary.BigEndian.Uint64(p[9:])
		f.Bytes = binary.BigEndian.Uint64(p[17:])
		f.Remaining = binary.BigEndian.Uint64(p[25:])
		f.G = binary.BigEndian.Uint64(p[33:])
		f.W = binary.BigEndian.Uint64(p[41:])
		if f.State < JobRunning || f.State > JobFailed {
			return 0, ErrBadState
		}
	}
	return HeaderLen + body, nil
}
