package ackmerge

import (
	"encoding/binary"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// SACK merging (Config.SACK). Each branch's latest SACK blocks describe
// client bytes it holds above its cumulative ack. The client may treat a
// byte as SACKed only if every live branch holds it: the blocks it gets are
// the intersection, over the live branches, of what each holds (cumulative
// ack or block). Bounded state: at most maxSACK blocks per branch.

const maxSACK = 4

type sackBlock struct{ lo, hi seqnum.Value }

// findSACK returns the offset in p.Buf of the SACK option and its length,
// or -1.
func findSACK(p *packet.TCP) (off, n int) {
	opts := p.Options()
	base := p.HeaderLen() - len(opts)
	for i := 0; i < len(opts); {
		switch opts[i] {
		case packet.OptEnd:
			return -1, 0
		case packet.OptNOP:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return -1, 0
		}
		if opts[i] == packet.OptSACK {
			return base + i, int(opts[i+1])
		}
		i += int(opts[i+1])
	}
	return -1, 0
}

// recordSACK stores the SACK blocks of branch b's segment p (client
// sequence space) above its cumulative ack.
func (b *branch) recordSACK(p *packet.TCP) {
	b.nsack = 0
	if p.HeaderLen() == p.IPHeaderLen()+20 {
		return
	}
	off, n := findSACK(p)
	if off < 0 {
		return
	}
	for i := off + 2; i+8 <= off+n && b.nsack < maxSACK; i += 8 {
		lo := seqnum.Value(binary.BigEndian.Uint32(p.Buf[i:]))
		hi := seqnum.Value(binary.BigEndian.Uint32(p.Buf[i+4:]))
		if b.acked.LessThan(lo) && lo.LessThan(hi) {
			b.sack[b.nsack] = sackBlock{lo, hi}
			b.nsack++
		}
	}
}

// holds reports up to where, from x, branch b holds client bytes
// contiguously (x itself if it does not hold x).
func (b *branch) holds(x seqnum.Value) seqnum.Value {
	if x.LessThan(b.acked) {
		return b.acked
	}
	for i := 0; i < b.nsack; i++ {
		if s := b.sack[i]; s.lo.LessThanEq(x) && x.LessThan(s.hi) {
			return s.hi
		}
	}
	return x
}

// mergeSACK rewrites the SACK option of p (a segment of the slowest
// branch k going to the client) to the blocks every live branch holds.
func (f *Flow) mergeSACK(p *packet.TCP, k int) {
	off, n := findSACK(p)
	if off < 0 {
		return
	}
	// Candidate blocks are branch k's; each is cut down to what every
	// other live branch holds too.
	var out [maxSACK]sackBlock
	m := 0
	b := &f.br[k]
	for i := 0; i < b.nsack && m < (n-2)/8; i++ {
		for x := b.sack[i].lo; x.LessThan(b.sack[i].hi) && m < (n-2)/8; {
			end := b.sack[i].hi
			for j := range f.br {
				o := &f.br[j]
				if j == k || o.removed || !o.answered {
					continue
				}
				if h := o.holds(x); h.LessThan(end) {
					end = h
				}
			}
			if x.LessThan(end) {
				out[m] = sackBlock{x, end}
				m++
				x = end
				continue
			}
			// x is missing somewhere: skip to the next byte any
			// branch's block starts at, or give up on this block.
			next := b.sack[i].hi
			for j := range f.br {
				o := &f.br[j]
				if o.removed || !o.answered {
					continue
				}
				for q := 0; q < o.nsack; q++ {
					if lo := o.sack[q].lo; x.LessThan(lo) && lo.LessThan(next) {
						next = lo
					}
				}
			}
			x = next
		}
	}
	old := p.Buf[off : off+n]
	if m == 0 {
		for i := range old {
			old[i] = packet.OptNOP
		}
	} else {
		old[1] = byte(2 + 8*m)
		for i := 0; i < m; i++ {
			binary.BigEndian.PutUint32(old[2+8*i:], uint32(out[i].lo))
			binary.BigEndian.PutUint32(old[6+8*i:], uint32(out[i].hi))
		}
		for i := 2 + 8*m; i < n; i++ {
			old[i] = packet.OptNOP
		}
	}
	if !p.Partial() {
		p.ComputeTCPChecksum()
	}
}
