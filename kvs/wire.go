package kvs

// Peer wire protocol. Every message is a frame: a 4-byte big-endian length of
// the rest, then the body. Requests and responses carry a 64-bit id chosen by
// the requester; responses may come back in any order.
//
//	request:  kind(1) id(8) keylen(2) key [tag(16) flags(1) vlen(4) value]  (tail for kindWrite)
//	response: kind|0x80(1) id(8) status(1) tag(16) flags(1) vlen(4) value   (value for kindRead only)
//
// kindRead returns the replica's (tag, flags, value), kindReadTag the
// (tag, flags) only, kindWrite stores (tag, flags, value) if tag is higher than
// the stored one and acknowledges with the tag now held.

import (
	"encoding/binary"
	"errors"
)

const (
	kindRead    byte = 1
	kindReadTag byte = 2
	kindWrite   byte = 3
	kindStatus  byte = 4 // key: statusQuery or statusRegister; answer flags: statusVoter, statusKnowsYou
	kindScan    byte = 5 // key: 0 | nothing (from the start) or 1 | last key; answer value: Scan records, flags: scanMore
	kindChanges byte = 6 // key: cursor tag | max entries u32; answer value: change-index entries above the cursor, flags: scanMore
	kindCatchup byte = 7 // key: catch-up stream op (catchup_source.go); answer value: end cursor | remaining | records, flags: flagTail
	kindApply   byte = 8 // a DC peer's catch-up batch (catchup_apply.go): kindWrite's layout, empty key, zero tag, value: records in the Scan format; one answer for all
	kindTags    byte = 9 // a DC peer's stub check (catchup_stub.go): kindWrite's layout, empty key, zero tag, value: (key len u16 | key)*; answer value: the replica's tag of each key
	kindResp    byte = 0x80

	statusOK      byte = 0
	statusErr     byte = 1
	statusLearner byte = 2 // the replica is a learner: its answer does not count toward a quorum

	statusQuery    byte = 0 // kindStatus: what is your state, do you know me as a voter
	statusRegister byte = 1 // kindStatus: remember me as a voter (persisted before the answer)

	flagVoter    byte = 1 // kindStatus answer: the replica votes
	flagKnowsYou byte = 2 // kindStatus answer: the replica has seen the asker become a voter
	flagScanMore byte = 1 // kindScan answer: more records follow
	flagTail     byte = 2 // kindCatchup answer: the page reached the end of the source's change index
	flagStub     byte = 4 // kindCatchup answer: the page's records are stubs (no values; catchup_stub.go)

	reqHeader  = 1 + 8 + 2
	respHeader = 1 + 8 + 1 + TagSize + 1 + 4
)

var errBadFrame = errors.New("kvs: malformed peer frame")

func beginFrame(b []byte) ([]byte, int) {
	start := len(b)
	return append(b, 0, 0, 0, 0), start
}

func endFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// appendReadReq appends a kindRead or kindReadTag request frame.
func appendReadReq(b []byte, kind byte, id uint64, key []byte) []byte {
	b, s := beginFrame(b)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, id)
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	b = append(b, key...)
	return endFrame(b, s)
}

// appendWriteReq appends a kindWrite request frame.
func appendWriteReq(b []byte, id uint64, key []byte, t Tag, flags byte, val []byte) []byte {
	b, s := beginFrame(b)
	b = append(b, kindWrite)
	b = binary.BigEndian.AppendUint64(b, id)
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	b = append(b, key...)
	b = AppendTag(b, t)
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(val)))
	b = append(b, val...)
	return endFrame(b, s)
}

// appendResp appends a response frame.
func appendResp(b []byte, kind byte, id uint64, status byte, t Tag, flags byte, val []byte) []byte {
	b, s := beginFrame(b)
	b = append(b, kind|kindResp)
	b = binary.BigEndian.AppendUint64(b, id)
	b = append(b, status)
	b = AppendTag(b, t)
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(val)))
	b = append(b, val...)
	return endFrame(b, s)
}

// request is a decoded request; its slices alias the frame.
type request struct {
	kind  byte
	id    uint64
	key   []byte
	tag   Tag
	flags byte
	val   []byte
}

// decodeReq decodes a request body (frame without its length prefix).
func decodeReq(b []byte, r *request) error {
	if len(b) < reqHeader {
		return errBadFrame
	}
	r.kind = b[0]
	r.id = binary.BigEndian.Uint64(b[1:])
	kl := int(binary.BigEndian.Uint16(b[9:]))
	b = b[reqHeader:]
	if len(b) < kl {
		return errBadFrame
	}
	r.key, b = b[:kl], b[kl:]
	r.tag, r.flags, r.val = Tag{}, 0, nil
	switch r.kind {
	case kindRead, kindReadTag, kindStatus, kindScan, kindChanges, kindCatchup:
		if len(b) != 0 {
			return errBadFrame
		}
	case kindWrite, kindApply, kindTags:
		if len(b) < TagSize+1+4 {
			return errBadFrame
		}
		r.tag = DecodeTag(b)
		r.flags = b[TagSize]
		vl := int(binary.BigEndian.Uint32(b[TagSize+1:]))
		b = b[TagSize+5:]
		if len(b) != vl {
			return errBadFrame
		}
		r.val = b
	default:
		return errBadFrame
	}
	return nil
}

// response is a decoded response; val aliases the frame.
type response struct {
	kind   byte
	id     uint64
	status byte
	tag    Tag
	flags  byte
	val    []byte
}

// decodeResp decodes a response body (frame without its length prefix).
func decodeResp(b []byte, r *response) error {
	if len(b) < respHeader || b[0]&kindResp == 0 {
		return errBadFrame
	}
	r.kind = b[0] &^ kindResp
	r.id = binary.BigEndian.Uint64(b[1:])
	r.status = b[9]
	r.tag = DecodeTag(b[10:])
	r.flags = b[10+TagSize]
	vl := int(binary.BigEndian.Uint32(b[11+TagSize:]))
	if len(b)-respHeader != vl {
		return errBadFrame
	}
	r.val = b[respHeader:]
	if r.kind < kindRead || r.kind > kindTags {
		return errBadFrame
	}
	return nil
}
