// Package virtio is a byte view of the virtio-net header (struct
// virtio_net_hdr, linux/virtio_net.h) that travels in front of every packet
// a netstackio.Device reads or writes. It is a leaf: it imports only the
// standard library, so packet parsers and the pure cores can use it without
// linking a TUN device or a network stack.
package virtio

import "encoding/binary"

// HdrLen is the size of struct virtio_net_hdr.
const HdrLen = 10

// Virtio-net header flags and GSO types (linux/virtio_net.h).
const (
	FlagNeedsCsum = 1 // TCP/UDP checksum field holds only the pseudo-header sum
	FlagDataValid = 2

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOECN   = 0x80
)

// Hdr is a byte view of a virtio_net_hdr (little-endian, as on every
// architecture we run on). It aliases the buffer it was made from.
type Hdr []byte

func (h Hdr) Flags() uint8       { return h[0] }
func (h Hdr) GSOType() uint8     { return h[1] }
func (h Hdr) HdrLen() uint16     { return binary.LittleEndian.Uint16(h[2:]) }
func (h Hdr) GSOSize() uint16    { return binary.LittleEndian.Uint16(h[4:]) }
func (h Hdr) CsumStart() uint16  { return binary.LittleEndian.Uint16(h[6:]) }
func (h Hdr) CsumOffset() uint16 { return binary.LittleEndian.Uint16(h[8:]) }

func (h Hdr) SetFlags(v uint8)       { h[0] = v }
func (h Hdr) SetGSOType(v uint8)     { h[1] = v }
func (h Hdr) SetHdrLen(v uint16)     { binary.LittleEndian.PutUint16(h[2:], v) }
func (h Hdr) SetGSOSize(v uint16)    { binary.LittleEndian.PutUint16(h[4:], v) }
func (h Hdr) SetCsumStart(v uint16)  { binary.LittleEndian.PutUint16(h[6:], v) }
func (h Hdr) SetCsumOffset(v uint16) { binary.LittleEndian.PutUint16(h[8:], v) }
func (h Hdr) NeedsCsum() bool        { return h[0]&FlagNeedsCsum != 0 }
func (h Hdr) Clear()                 { clear(h[:HdrLen]) }
func (h Hdr) IsGSO() bool            { return h[1]&^GSOECN != GSONone }

// At returns the virtio-net header in front of the packet at buf[offset:].
func At(buf []byte, offset int) Hdr { return Hdr(buf[offset-HdrLen : offset]) }
