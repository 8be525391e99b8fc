package kvs

// Sequenced writes on the RESP front. A connection counts the bytes it has
// read (offset 0 = the first byte after the handshake, as the middlebox
// counts the client stream); each command records the stream offset just
// past its last byte. In sequenced mode a write command occupying bytes
// [s, e) takes the tag
//
//	Tag{Counter: G(e-1), Writer: 1<<63 | (e-1)}
//
// where G(e-1) is the middlebox's stamp of its last byte, and is written in
// one round (no query phase). Every DC's node serving the flow sees the same
// bytes and the same stamps, so it computes the same tag.

import (
	"net"
	"net/netip"
	"time"

	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// stampedWriter marks a Writer derived from a stream offset (a stamped tag).
const stampedWriter = 1 << 63

// IsStamped reports whether t is a sequenced (stamped) tag.
func (t Tag) IsStamped() bool { return t.Writer&stampedWriter != 0 }

// seqConn is a RESP connection's sequencing state.
type seqConn struct {
	flow    orderwire.Flow
	hasFlow bool   // the connection is an IPv4 flow that may be sequenced
	read    uint64 // stream bytes read so far
	lastEnd uint64 // stream offset past the last command parsed
}

func flowOfConn(c net.Conn) (orderwire.Flow, bool) {
	ra, ok1 := c.RemoteAddr().(*net.TCPAddr)
	la, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return orderwire.Flow{}, false
	}
	ip, ok := netip.AddrFromSlice(ra.IP)
	if !ok {
		return orderwire.Flow{}, false
	}
	return orderwire.FlowOf(netip.AddrPortFrom(ip, uint16(ra.Port)), uint16(la.Port))
}

// forkedClientsFactor bounds the connections a node keeps open when the
// ones over MaxClients are forked flows (serveClient).
const forkedClientsFactor = 4

// forkedOpenWait is how long a connection over MaxClients waits for the
// order stream's OPEN (sent before the flow's SYN, but on another
// connection) before it is taken for one the middlebox did not fork.
const forkedOpenWait = 250 * time.Millisecond

// forkedConn reports whether c is a flow the order stream announced
// (OPEN or STAMP), waiting for the announcement until deadline (zero: not
// at all).
func (n *Node) forkedConn(c net.Conn, deadline time.Time) bool {
	if n.seq == nil {
		return false
	}
	k, ok := flowOfConn(c)
	if !ok {
		return false
	}
	return n.seq.table.awaitOpen(k, deadline)
}

// seqAttach registers the connection's flow with the stamp table.
func (cc *clientConn) seqAttach() {
	if cc.n.seq == nil {
		return
	}
	cc.sq.flow, cc.sq.hasFlow = flowOfConn(cc.c)
	if cc.sq.hasFlow {
		cc.n.seq.table.attach(cc.sq.flow)
	}
}

func (cc *clientConn) seqDetach() {
	if cc.n.seq != nil && cc.sq.hasFlow {
		cc.n.seq.table.detach(cc.sq.flow)
	}
}

// seqParsed records that the command just added ends where the unparsed
// bytes (unparsed of them) begin.
func (cc *clientConn) seqParsed(unparsed int) {
	end := cc.sq.read - uint64(unparsed)
	cc.cmds[len(cc.cmds)-1].end = end
	cc.sq.lastEnd = end
}

// seqConsume frees the stamps of every byte the finished batch covered.
func (cc *clientConn) seqConsume() {
	if cc.n.seq != nil && cc.sq.hasFlow && cc.sq.lastEnd > 0 {
		cc.n.seq.table.consume(cc.sq.flow, cc.sq.lastEnd)
	}
}

// seqStamp gives write bc its stamped tag, waiting for the stamp until the
// batch deadline. It returns false (with bc.err set) if the write must not
// run: it is never applied with a guessed tag.
func (cc *clientConn) seqStamp(bc *batchCmd) bool {
	s := cc.n.seq
	if !cc.sq.hasFlow || bc.end == 0 {
		s.stats.Refused.Add(1)
		bc.err = "ERR " + errUnsequenced.Error()
		return false
	}
	last := bc.end - 1
	t0 := time.Now()
	g, waited, err := s.table.await(cc.sq.flow, last, &cc.dl, s.grace)
	if waited {
		s.stats.StampWaits.Add(1)
		s.stats.Wait.Observe(time.Since(t0))
	}
	switch err {
	case nil:
	case errUnsequenced:
		s.stats.Refused.Add(1)
		bc.err = "ERR " + err.Error()
		return false
	default:
		s.stats.StampTimeouts.Add(1)
		bc.err = "ERR " + err.Error()
		return false
	}
	bc.tag = Tag{Counter: g, Writer: stampedWriter | last}
	bc.stamped = true
	return true
}

// startWrite starts a write op: one round with bc's stamped tag if it has
// one, else ABD's two rounds.
func (cc *clientConn) startWrite(o *op, kind opKind, key, val []byte, bc *batchCmd) {
	if bc.stamped {
		cc.n.coord.startStamped(o, kind, key, val, bc.tag)
		return
	}
	cc.n.coord.start(o, kind, key, val)
}

// seqDone accounts a stamped write that completed.
func (cc *clientConn) seqDone(bc *batchCmd) {
	if bc.stamped {
		cc.n.seq.stats.Writes.Add(1)
		cc.n.seq.stats.observeApplied(bc.tag.Counter)
	}
}
