package kvs

// Catch-up, the driver's connection to a source node, kept between passes:
// the middlebox runs several passes per rejoin (the first is seldom clean:
// the next one starts --rejoin-margin after the last flow that lacked the
// DC), and a new connection per pass paid the dial, the peer handshake and
// TCP's slow start again (3.5 s to reach 8 MB/s over a 350 ms round trip
// in bench rejoin). A pass that reached the tail parks its connection
// (after reading the answers to the pages it asked ahead); while parked,
// the connection carries a ping every catchupPingEvery, so the source's
// side never idles past a retransmission timeout and keeps its congestion
// window (Linux restarts the window after such an idle); the next pass to
// the same node takes it and sends a new start. A parked connection is
// closed after catchupIdle, when a ping fails, when the node closes, or
// when a pass to another node starts.

import (
	"net"
	"sync"
	"time"
)

const (
	catchupIdle      = 20 * time.Second
	catchupPingEvery = 100 * time.Millisecond
	catchupPingWait  = 3 * time.Second // a ping's answer (a taker waits at most this long)
)

// catchupConn is one stream connection and its next request id.
type catchupConn struct {
	addr   string
	c      net.Conn
	fr     *frameReader
	nextID uint64

	stop chan struct{} // closed by the taker: the pinger ends
	done chan struct{} // closed by the pinger; then alive is settled
	// alive is false once the pinger closed the connection.
	alive bool
}

// catchupConns holds at most one parked connection.
type catchupConns struct {
	mu     sync.Mutex
	parked *catchupConn
}

// takeCatchupConn returns the parked connection to addr if it is alive,
// else nil (closing one to another address).
func (n *Node) takeCatchupConn(addr string) *catchupConn {
	p := &n.catchConns
	p.mu.Lock()
	cc := p.parked
	p.parked = nil
	p.mu.Unlock()
	if cc == nil {
		return nil
	}
	close(cc.stop)
	<-cc.done
	if !cc.alive {
		return nil
	}
	if cc.addr != addr {
		cc.c.Close()
		return nil
	}
	return cc
}

// parkCatchupConn keeps cc for the next pass, pinging the source until it
// is taken.
func (n *Node) parkCatchupConn(cc *catchupConn) {
	cc.stop, cc.done, cc.alive = make(chan struct{}), make(chan struct{}), true
	p := &n.catchConns
	p.mu.Lock()
	old := p.parked
	p.parked = cc
	p.mu.Unlock()
	if old != nil {
		close(old.stop)
		<-old.done
		if old.alive {
			old.c.Close()
		}
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.pingParked(cc)
	}()
}

// pingParked pings cc's source until cc is taken (close(stop)), its idle
// time runs out, a ping fails or the node closes; in the last three cases
// it closes the connection and drops it from the pool.
func (n *Node) pingParked(cc *catchupConn) {
	defer close(cc.done)
	idle := time.NewTimer(catchupIdle)
	defer idle.Stop()
	tick := time.NewTicker(catchupPingEvery)
	defer tick.Stop()
	var wbuf []byte
	var r response
	drop := func() {
		cc.alive = false
		cc.c.Close()
		p := &n.catchConns
		p.mu.Lock()
		if p.parked == cc {
			p.parked = nil
		}
		p.mu.Unlock()
	}
	for {
		select {
		case <-cc.stop:
			return
		case <-idle.C:
			drop()
			return
		case <-n.closing:
			drop()
			return
		case <-tick.C:
		}
		id := cc.nextID
		cc.nextID++
		wbuf = appendReadReq(wbuf[:0], kindCatchup, id, []byte{catchupPing})
		cc.c.SetDeadline(time.Now().Add(catchupPingWait))
		if _, err := cc.c.Write(wbuf); err != nil {
			drop()
			return
		}
		body, err := cc.fr.next()
		if err != nil || decodeResp(body, &r) != nil || r.id != id || r.status != statusOK {
			drop()
			return
		}
		cc.c.SetDeadline(time.Time{})
	}
}
