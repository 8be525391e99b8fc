package packet

import "encoding/binary"

// TCP options: walk, parse the SYN options, and edit in place.

// walkOptions calls fn for each option with its kind and its offset within
// p.Buf and its total length (kind and length bytes included). It returns
// ErrBadOptions for a malformed list. fn returning false stops the walk.
func (p *TCP) walkOptions(fn func(kind byte, off, n int) bool) error {
	start, end := p.ipl+tcpOptions, p.ipl+p.tcpl
	for i := start; i < end; {
		k := p.Buf[i]
		switch k {
		case OptEnd:
			return nil
		case OptNOP:
			if !fn(k, i, 1) {
				return nil
			}
			i++
			continue
		}
		if i+1 >= end {
			return ErrBadOptions
		}
		n := int(p.Buf[i+1])
		if n < 2 || i+n > end {
			return ErrBadOptions
		}
		if !fn(k, i, n) {
			return nil
		}
		i += n
	}
	return nil
}

// SynOptions are the options the middlebox cares about on SYN and SYN-ACK.
type SynOptions struct {
	MSS          uint16 // 0 if absent
	WS           uint8  // window scale shift, valid if WSOK
	WSOK         bool
	SACKOK       bool
	Timestamps   bool
	TSVal, TSEcr uint32
}

// SynOptions parses MSS, window scale, SACK-permitted and timestamps.
func (p *TCP) SynOptions() (SynOptions, error) {
	var o SynOptions
	err := p.walkOptions(func(k byte, off, n int) bool {
		switch {
		case k == OptMSS && n == 4:
			o.MSS = binary.BigEndian.Uint16(p.Buf[off+2:])
		case k == OptWindowScale && n == 3:
			o.WS, o.WSOK = p.Buf[off+2], true
			if o.WS > 14 {
				o.WS = 14
			}
		case k == OptSACKPermitted && n == 2:
			o.SACKOK = true
		case k == OptTimestamps && n == 10:
			o.Timestamps = true
			o.TSVal = binary.BigEndian.Uint32(p.Buf[off+2:])
			o.TSEcr = binary.BigEndian.Uint32(p.Buf[off+6:])
		}
		return true
	})
	return o, err
}

// NopOptions overwrites in place, with NOPs, every option whose kind is in
// kinds (e.g. OptSACKPermitted, OptTimestamps, OptSACK), updating the
// checksum. It returns how many options it removed.
func (p *TCP) NopOptions(kinds ...byte) (int, error) {
	removed := 0
	err := p.walkOptions(func(k byte, off, n int) bool {
		for _, want := range kinds {
			if k == want {
				p.nopRange(off, n)
				removed++
				break
			}
		}
		return true
	})
	return removed, err
}

// nopRange sets n bytes at off to NOP with a checksum update. Words are
// aligned relative to the TCP header start, which is 4-byte aligned in
// the packet, so we update whole aligned 16-bit words.
func (p *TCP) nopRange(off, n int) {
	// Work on the aligned span [a, b) of 16-bit words relative to p.ipl.
	rel := off - p.ipl
	a := p.ipl + rel&^1
	b := p.ipl + (rel+n+1)&^1
	old := sum16(p.Buf[a:b])
	for i := off; i < off+n; i++ {
		p.Buf[i] = OptNOP
	}
	p.updateTCPCsumHeader(old, sum16(p.Buf[a:b]))
}

// SetMSS rewrites an existing MSS option's value; it reports whether one
// was present.
func (p *TCP) SetMSS(v uint16) bool {
	found := false
	p.walkOptions(func(k byte, off, n int) bool {
		if k == OptMSS && n == 4 {
			found = true
			p.rewriteOptBytes(off+2, 2, func(b []byte) { put16(b, v) })
			return false
		}
		return true
	})
	return found
}

// rewriteOptBytes lets fn change n bytes at off and updates the checksum
// over the aligned words covering them.
func (p *TCP) rewriteOptBytes(off, n int, fn func([]byte)) {
	rel := off - p.ipl
	a := p.ipl + rel&^1
	b := p.ipl + (rel+n+1)&^1
	old := sum16(p.Buf[a:b])
	fn(p.Buf[off : off+n])
	p.updateTCPCsumHeader(old, sum16(p.Buf[a:b]))
}
