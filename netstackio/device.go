// Package netstackio moves IP packets between the middlebox and the kernel
// (or an in-memory peer in tests) in batches.
//
//	kernel ──TUN──► Device.Read ──► middlebox ──► Device.Write ──TUN──► kernel
//
// Every packet travels with a virtio-net header (virtio.Hdr) of virtio.HdrLen bytes
// placed immediately in front of it in the caller's buffer: callers pass an
// offset of at least virtio.HdrLen and the header occupies
// buf[offset-virtio.HdrLen:offset]. Devices without offloads fill it with zeros
// on Read (a plain packet with a complete checksum) and, on Write, finish any
// requested checksum or segmentation in software.
package netstackio

import "errors"

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
// offset must be at least virtio.HdrLen. Each buffer passed to Read must hold
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
