package kvs

// The peer client: this node's persistent connection to each peer.

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// peerClient is this node's persistent, pipelined connection to one peer:
// requests from every coordinator goroutine are batched onto it, answers are
// dispatched to ops by id. Safe for concurrent use.
type peerClient struct {
	n    *Node
	idx  int
	id   uint64 // the member this client dials
	addr string
	w    atomic.Pointer[batchWriter]

	mu   sync.Mutex
	conn net.Conn
	quit bool

	callSeq atomic.Uint64
	callMu  sync.Mutex
	calls   map[uint64]chan response
}

func (p *peerClient) sendRead(kind byte, id uint64, key []byte) bool {
	w := p.w.Load()
	if w == nil {
		return false
	}
	b, ok := w.lock()
	if !ok {
		return false
	}
	w.unlock(appendReadReq(b, kind, id, key))
	return true
}

func (p *peerClient) sendWrite(id uint64, key []byte, t Tag, flags byte, val []byte) bool {
	w := p.w.Load()
	if w == nil {
		return false
	}
	b, ok := w.lock()
	if !ok {
		return false
	}
	w.unlock(appendWriteReq(b, id, key, t, flags, val))
	return true
}

func (p *peerClient) stop() {
	p.mu.Lock()
	p.quit = true
	if p.conn != nil {
		p.conn.Close()
	}
	p.mu.Unlock()
}

func (p *peerClient) run() {
	defer p.n.wg.Done()
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-p.n.closing:
			return
		default:
		}
		d := net.Dialer{Timeout: time.Second, LocalAddr: p.n.dialFrom(), Control: dialControl}
		c, err := d.Dial("tcp", p.addr)
		if err != nil {
			select {
			case <-p.n.closing:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 500*time.Millisecond)
			continue
		}
		backoff = 10 * time.Millisecond
		p.mu.Lock()
		if p.quit {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conn = c
		p.mu.Unlock()
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		if err := p.n.dialPeer(c, p.id); err != nil {
			p.n.stats.PeerAuthFail.Add(1)
			p.n.log.Warn("peer handshake failed", "peer", p.addr, "err", err)
			c.Close()
			p.mu.Lock()
			p.conn = nil
			p.mu.Unlock()
			select {
			case <-p.n.closing:
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		w := newBatchWriter(c, 32<<20)
		p.w.Store(w)
		p.n.log.Debug("peer connected", "peer", p.addr)
		p.readLoop(c)
		p.w.Store(nil)
		w.close()
		p.mu.Lock()
		p.conn = nil
		p.mu.Unlock()
	}
}

func (p *peerClient) readLoop(c net.Conn) {
	fr := newFrameReader(c, p.n.maxFrame())
	var r response
	for {
		body, err := fr.next()
		if err != nil {
			return
		}
		if err := decodeResp(body, &r); err != nil {
			p.n.stats.PeerBad.Add(1)
			return
		}
		if r.id&callBit != 0 {
			p.deliverCall(&r)
			continue
		}
		ok := r.status == statusOK
		if err := p.n.checkTag(r.tag); err != nil {
			p.n.stats.BadTags.Add(1)
			p.n.log.Warn("peer answer with a bad tag; dropping connection", "peer", p.addr, "tag", r.tag, "err", err)
			return
		}
		switch r.kind {
		case kindRead, kindReadTag:
			p.n.coord.deliverRead(r.id, ok, r.tag, r.flags, r.val)
		case kindWrite:
			p.n.coord.deliverAck(r.id, ok)
		}
	}
}
