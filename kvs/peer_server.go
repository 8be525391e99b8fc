package kvs

// The peer server: answers other nodes' reads and writes on the peer port.

import (
	"bufio"
	"errors"
	"net"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
)

// serverConn answers one peer's requests. Reads are served inline by the
// connection's reader goroutine; writes go to the store's committer, which
// answers through writeDone. Safe for concurrent use.
type serverConn struct {
	n *Node
	w *batchWriter
}

func (s *serverConn) writeDone(id uint64, ok bool, held Tag) {
	st := statusOK
	if !ok {
		st = statusErr
	} else if !s.n.voter.Load() {
		st = statusLearner
	}
	b, live := s.w.lock()
	if !live {
		return
	}
	s.w.unlock(appendResp(b, kindWrite, id, st, held, 0, nil))
}

func (n *Node) maxFrame() int { return n.cfg.MaxKey + n.cfg.MaxValue + 64 + scanBatch }

func (n *Node) servePeer(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	// Another DC's catch-up driver names CatchupCluster in its hello.
	pc := &peekConn{Conn: c, r: bufio.NewReaderSize(c, 1024)}
	var peer peerauth.Hello
	var err error
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	if n.cfg.PeerSecret != nil && peekCluster(pc.r) == CatchupCluster {
		peer, err = n.acceptCatchup(pc)
	} else {
		peer, err = n.acceptPeer(pc)
	}
	c.SetReadDeadline(time.Time{})
	if err != nil {
		n.stats.PeerAuthFail.Add(1)
		n.log.Warn("peer handshake refused", "peer", c.RemoteAddr(), "err", err)
		return
	}
	sc := &serverConn{n: n, w: newBatchWriter(c, 32<<20)}
	defer sc.w.close()
	fr := newFrameReader(pc, n.maxFrame())
	var req request
	var vbuf []byte
	var cs catchupStream
	var stream streamTCP // the served catch-up stream's TCP_INFO at its start (catchup_stream_report.go)
	defer n.endServedStream(c, &stream)
	remote := peer.Role == roleDCReader
	for {
		body, err := fr.next()
		if err != nil {
			if errors.Is(err, errFrameTooBig) {
				n.stats.PeerBad.Add(1)
			}
			return
		}
		if err := decodeReq(body, &req); err != nil || len(req.key) > n.cfg.MaxKey+9 || (len(req.val) > n.cfg.MaxValue && req.kind != kindApply && req.kind != kindTags) {
			n.stats.PeerBad.Add(1)
			n.log.Warn("malformed peer request; dropping connection", "peer", c.RemoteAddr())
			return
		}
		if remote && req.kind != kindCatchup {
			n.catchStats.RemoteRefused.Add(1)
			n.log.Warn("peer request refused: another DC's node may only read the catch-up stream; dropping connection", "peer", c.RemoteAddr(), "kind", req.kind)
			return
		}
		switch req.kind {
		case kindStatus, kindScan, kindChanges, kindCatchup:
			var st, f byte
			var v []byte
			switch req.kind {
			case kindStatus:
				st, f = n.serveStatus(req.key, peer.ID)
			case kindScan:
				st, f, v = n.serveScan(req.key, vbuf[:0])
			case kindChanges:
				st, f, v = n.serveChanges(req.key, vbuf[:0])
			default:
				if !cs.started {
					n.paceCatchup(c) // a catch-up stream: send at most at --catchup-rate
				}
				if len(req.key) > 0 && req.key[0] == catchupStart {
					n.endServedStream(c, &stream) // one that ended before its tail
					stream = tcpSample(c)
				} else if stream.tail {
					// The first request after the tail: the driver read
					// every page (a ping of the parked connection, a
					// verify, or a new start).
					n.endServedStream(c, &stream)
				}
				st, f, v = n.serveCatchup(&cs, req.key, vbuf[:0])
				if f&flagTail != 0 && stream.ok {
					stream.tail = true
				}
			}
			vbuf = v
			if cap(vbuf) > 1<<20 {
				vbuf = nil
			}
			b, live := sc.w.lock()
			if !live {
				return
			}
			sc.w.unlock(appendResp(b, req.kind, req.id, st, Tag{}, f, v))
			continue
		case kindRead, kindReadTag:
			if len(req.key) > n.cfg.MaxKey {
				n.stats.PeerBad.Add(1)
				return
			}
			t, f, v, err := n.store.Get(req.key, req.kind == kindRead, vbuf[:0])
			vbuf = v
			st := statusOK
			if err != nil {
				st = statusErr
			} else if !n.voter.Load() {
				st = statusLearner
			}
			b, live := sc.w.lock()
			if !live {
				return
			}
			sc.w.unlock(appendResp(b, req.kind, req.id, st, t, f, v))
			if cap(vbuf) > 64<<10 {
				vbuf = nil
			}
		case kindWrite:
			if len(req.key) > n.cfg.MaxKey {
				n.stats.PeerBad.Add(1)
				return
			}
			if err := n.checkTag(req.tag); err != nil {
				n.stats.BadTags.Add(1)
				n.log.Warn("peer write refused; dropping connection", "peer", c.RemoteAddr(), "id", peer.ID, "tag", req.tag, "err", err)
				return
			}
			n.store.Put(req.key, req.tag, req.flags, req.val, req.id, sc)
		case kindTags:
			if !n.serveTags(req.id, req.val, sc) {
				n.stats.PeerBad.Add(1)
				n.log.Warn("malformed stub check; dropping connection", "peer", c.RemoteAddr(), "id", peer.ID)
				return
			}
		case kindApply:
			if !n.serveApply(req.id, req.tag, req.val, sc) {
				n.stats.PeerBad.Add(1)
				n.log.Warn("malformed catch-up batch; dropping connection", "peer", c.RemoteAddr(), "id", peer.ID)
				return
			}
		}
	}
}
