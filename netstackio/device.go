// Package netstackio moves IP packets between the middlebox and the kernel
// (or an in-memory peer in tests) in batches.
//
//	kernel ──TUN──► Device.Read ──► middlebox ──► Device.Write ──TUN──► kernel
//
// Every packet travels with a virtio-net header (VnetHdr) of VnetHdrLen bytes
// placed immediately in front of it in the caller's buffer: callers pass an
// offset of at least VnetHdrLen and the header occupies
// buf[offset-VnetHdrLen:offset]. Devices without offloads fill it with zeros
// on Read (a plain packet with a complete checksum) and, on Write, finish any
// requested checksum or segmentation in software.
package netstackio

import (
	"encoding/binary"
	"errors"
)

// VnetHdrLen is the size of struct virtio_net_hdr.
const VnetHdrLen = 10

// Virtio-net header flags and GSO types (linux/virtio_net.h).
const (
	VnetFlagNeedsCsum = 1 // TCP/UDP checksum field holds only the pseudo-header sum
	VnetFlagDataValid = 2

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOECN   = 0x80
)

// VnetHdr is a byte view of a virtio_net_hdr (little-endian, as on every
// architecture we run on). It aliases the buffer it was made from.
type VnetHdr []byte

func (h VnetHdr) Flags() uint8       { return h[0] }
func (h VnetHdr) GSOType() uint8     { return h[1] }
func (h VnetHdr) HdrLen() uint16     { return binary.LittleEndian.Uint16(h[2:]) }
func (h VnetHdr) GSOSize() uint16    { return binary.LittleEndian.Uint16(h[4:]) }
func (h VnetHdr) CsumStart() uint16  { return binary.LittleEndian.Uint16(h[6:]) }
func (h VnetHdr) CsumOffset() uint16 { return binary.LittleEndian.Uint16(h[8:]) }

func (h VnetHdr) SetFlags(v uint8)       { h[0] = v }
func (h VnetHdr) SetGSOType(v uint8)     { h[1] = v }
func (h VnetHdr) SetHdrLen(v uint16)     { binary.LittleEndian.PutUint16(h[2:], v) }
func (h VnetHdr) SetGSOSize(v uint16)    { binary.LittleEndian.PutUint16(h[4:], v) }
func (h VnetHdr) SetCsumStart(v uint16)  { binary.LittleEndian.PutUint16(h[6:], v) }
func (h VnetHdr) SetCsumOffset(v uint16) { binary.LittleEndian.PutUint16(h[8:], v) }
func (h VnetHdr) NeedsCsum() bool        { return h[0]&VnetFlagNeedsCsum != 0 }
func (h VnetHdr) Clear()                 { clear(h[:VnetHdrLen]) }
func (h VnetHdr) IsGSO() bool            { return h[1]&^GSOECN != GSONone }

// Hdr returns the virtio-net header in front of the packet at buf[offset:].
func Hdr(buf []byte, offset int) VnetHdr { return VnetHdr(buf[offset-VnetHdrLen : offset]) }

// ErrClosed is returned by Read and Write after Close.
var ErrClosed = errors.New("netstackio: device closed")

// Device is batched packet I/O.
//
// Read fills bufs[i][offset:] with up to len(bufs) packets, sets sizes[i] to
// each packet's length (not counting the virtio-net header) and returns the
// number of packets. It blocks until at least one packet is available.
// Write sends bufs[i][offset:] (each slice ends where its packet ends) and
// returns how many were accepted. The caller owns every buffer before and
// after the call; a Device never keeps a reference after returning.
// offset must be at least VnetHdrLen. Each buffer passed to Read must hold
// at least MaxPacket bytes after offset.
//
// One goroutine may call Read while another calls Write; Read is not safe
// for concurrent use with itself, nor Write with itself.
type Device interface {
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	Write(bufs [][]byte, offset int) (int, error)
	// BatchSize is the largest useful number of buffers per call.
	BatchSize() int
	// MTU of the link (packets on the wire; GSO packets may be larger).
	MTU() int
	// Offload reports whether packets may carry GSO/partial-checksum
	// virtio-net headers in either direction.
	Offload() bool
	Name() string
	Close() error
}

// MaxPacket is the largest packet (a 64 KiB GSO segment) a Device may
// return; size read buffers as offset+MaxPacket.
const MaxPacket = 65535
