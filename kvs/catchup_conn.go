package kvs

// Catch-up, the driver's connection to a source node, kept between passes:
// the middlebox runs several passes per rejoin (the first is seldom clean),
// a second or two apart, and a new connection per pass pays the dial, the
// peer handshake and TCP's slow start again (about 3 s for the first 4 MiB
// over a 340 ms round trip). A pass that reached the tail parks its
// connection (after reading the answers to the pages it asked ahead); the
// next pass to the same node takes it and sends a new start. A parked
// connection is closed after catchupIdle, when the node closes, or when a
// pass to another node starts.

import (
	"net"
	"sync"
	"time"
)

const catchupIdle = 30 * time.Second

// catchupConn is one stream connection and its next request id.
type catchupConn struct {
	addr   string
	c      net.Conn
	fr     *frameReader
	nextID uint64
}

// catchupConns holds at most one parked connection.
type catchupConns struct {
	mu     sync.Mutex
	parked *catchupConn
	gen    uint64
}

// take returns the parked connection to addr, or nil (closing one to
// another address).
func (n *Node) takeCatchupConn(addr string) *catchupConn {
	p := &n.catchConns
	p.mu.Lock()
	cc := p.parked
	p.parked = nil
	p.gen++
	p.mu.Unlock()
	if cc != nil && cc.addr != addr {
		cc.c.Close()
		cc = nil
	}
	return cc
}

// parkCatchupConn keeps cc for the next pass, closing it after catchupIdle
// or when the node closes.
func (n *Node) parkCatchupConn(cc *catchupConn) {
	p := &n.catchConns
	p.mu.Lock()
	old := p.parked
	p.parked = cc
	p.gen++
	gen := p.gen
	p.mu.Unlock()
	if old != nil {
		old.c.Close()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTimer(catchupIdle)
		defer t.Stop()
		select {
		case <-t.C:
		case <-n.closing:
		}
		p.mu.Lock()
		if p.gen == gen && p.parked == cc {
			p.parked = nil
		} else {
			cc = nil // taken or replaced: no longer ours to close
		}
		p.mu.Unlock()
		if cc != nil {
			cc.c.Close()
		}
	}()
}
