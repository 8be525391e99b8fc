package kvs

// Order listener of a sequenced node (Config.OrderListen): the middlebox
// dials it, proves the order secret (internal/peerauth, role "sequencer",
// cluster "sdnkvs-order"), then streams HELLO/OPEN/STAMP/CLOSE frames into
// the node's stamp table. The node answers with APPLIED frames (the highest
// G it has applied) at most every AppliedEvery, when that changed.
//
//	middlebox --frames--> readOrder (one goroutine per order conn) --> stampTable
//	middlebox <-APPLIED-- sendApplied (one goroutine per order conn) <-- SeqStats.AppliedG

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// OrderCluster is the peerauth cluster name of order-stream connections.
const OrderCluster = "sdnkvs-order"

// Defaults of sequenced mode.
const (
	AppliedEvery          = 100 * time.Millisecond
	orderHandshakeTimeout = 5 * time.Second
)

// seqNode is the sequenced-mode state of a node (nil in ABD mode).
type seqNode struct {
	n      *Node
	table  *stampTable
	stats  SeqStats
	ln     net.Listener
	secret []byte
	grace  time.Duration
	out    atomic.Pointer[orderOut] // the newest order connection
}

// orderOut serialises the node's frames on one order connection (APPLIED
// and catch-up PROGRESS).
type orderOut struct {
	mu sync.Mutex
	c  net.Conn
}

func (o *orderOut) write(b []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := o.c.Write(b)
	return err
}

// report sends a catch-up PROGRESS frame on the newest order connection
// (dropped when there is none: the middlebox re-asks after reconnecting).
func (s *seqNode) report(f orderwire.Frame) {
	o := s.out.Load()
	if o == nil {
		return
	}
	b, err := orderwire.Append(nil, &f)
	if err != nil {
		s.n.log.Warn("catch-up: progress frame not encodable", "err", err)
		return
	}
	if err := o.write(b); err != nil {
		s.n.log.Debug("catch-up: progress not sent", "err", err)
	}
}

func (n *Node) startSequenced() error {
	cfg := n.cfg
	if len(cfg.OrderSecret) < peerauth.MinSecret {
		return fmt.Errorf("kvs: --order-listen needs an order secret of at least %d bytes (--order-secret-file)", peerauth.MinSecret)
	}
	s := &seqNode{n: n, secret: cfg.OrderSecret, grace: cfg.UnsequencedGrace}
	// An unknown flow is waited for as long as a missing stamp: OPEN
	// precedes the flow's stamps on the order stream, so a shorter wait
	// would refuse, in one DC only, a write whose order stream merely lags
	// (and the DCs would answer differently).
	if s.grace <= 0 || s.grace > cfg.Timeout {
		s.grace = cfg.Timeout
	}
	s.table = newStampTable(&s.stats)
	ln, err := net.Listen("tcp", cfg.OrderListen)
	if err != nil {
		return fmt.Errorf("kvs: order listen: %w", err)
	}
	s.ln = ln
	n.seq = s
	n.wg.Add(1)
	go n.acceptLoop(ln, s.serveOrder)
	return nil
}

// OrderAddr is the order-stream listen address ("" if not sequenced).
func (n *Node) OrderAddr() string {
	if n.seq == nil {
		return ""
	}
	return n.seq.ln.Addr().String()
}

// Sequenced reports whether the node runs in sequenced mode: writes take
// their tags from the middlebox's stamps, and stamped tags (Writer's top bit
// set) are valid.
func (n *Node) Sequenced() bool { return n.seq != nil }

// SeqStats returns the sequencer counters (nil if not sequenced).
func (n *Node) SeqStats() *SeqStats {
	if n.seq == nil {
		return nil
	}
	return &n.seq.stats
}

func (s *seqNode) serveOrder(c net.Conn) {
	self := peerauth.Hello{Cluster: OrderCluster, Role: peerauth.RoleNode, ID: uint64(s.n.cfg.ID)}
	accept := func(p peerauth.Hello) error {
		if p.Role != peerauth.RoleSequencer {
			return fmt.Errorf("role %q may not send the order stream", p.Role)
		}
		return nil
	}
	peer, err := peerauth.Server(c, s.secret, self, accept, time.Now().Add(orderHandshakeTimeout))
	if err != nil {
		s.stats.OrderBad.Add(1)
		s.n.log.Warn("order stream: handshake failed", "from", c.RemoteAddr(), "err", err)
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	s.stats.OrderConns.Add(1)
	defer s.stats.OrderConns.Add(-1)
	s.n.log.Info("order stream connected", "from", c.RemoteAddr(), "sequencer", peer.ID)
	out := &orderOut{c: c}
	s.out.Store(out) // catch-up PROGRESS goes to the newest order connection
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.sendApplied(out, done)
	}()
	defer func() {
		close(done)
		c.Close()
		<-stopped
	}()
	if err := s.readOrder(c); err != nil {
		s.stats.OrderBad.Add(1)
		s.n.log.Warn("order stream dropped", "from", c.RemoteAddr(), "err", err)
	}
}

var errOrderFrame = errors.New("order stream: frame not valid from a sequencer")

// readOrder applies frames until the stream ends; it returns an error for a
// corrupt stream (nil for a clean or abrupt close by the peer).
func (s *seqNode) readOrder(c net.Conn) error {
	rd := orderwire.NewReader(c)
	var f orderwire.Frame
	for {
		if err := rd.ReadFrame(&f); err != nil {
			var ne net.Error
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne) {
				return nil
			}
			return err
		}
		switch f.Type {
		case orderwire.Hello:
			if err := s.table.checkFloor(f.GFloor); err != nil {
				return err
			}
			s.table.hello(f.Epoch)
		case orderwire.Open:
			s.table.open(f.Flow)
		case orderwire.Stamp:
			if f.G >= 1<<63 {
				return fmt.Errorf("%w: stamp G %d out of range", errOrderFrame, f.G)
			}
			s.table.stamp(f.Flow, f.Start, f.End, f.G)
		case orderwire.Close:
			s.table.close(f.Flow)
		case orderwire.Catchup:
			src := f.SourceName()
			verify := f.Flags&orderwire.CatchupVerify != 0
			s.n.log.Info("catch-up: job requested", "job", f.Job, "source", src, "cursor", Tag{Counter: f.G, Writer: f.W}, "verify", verify, "bound_g", f.Bound)
			if verify {
				s.n.StartCatchupVerify(f.Job, src, Tag{Counter: f.G, Writer: f.W}, f.Bound, s.report)
			} else {
				s.n.StartCatchup(f.Job, src, Tag{Counter: f.G, Writer: f.W}, s.report)
			}
		case orderwire.Stop:
			s.n.StopCatchup(f.Job)
		default:
			return fmt.Errorf("%w: type %d", errOrderFrame, f.Type)
		}
	}
}

// sendApplied reports the highest applied G every AppliedEvery, when it
// changed, until done is closed or a write fails.
func (s *seqNode) sendApplied(out *orderOut, done <-chan struct{}) {
	t := time.NewTicker(AppliedEvery)
	defer t.Stop()
	var sent uint64
	buf := make([]byte, 0, orderwire.MaxFrame)
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		g := s.stats.AppliedG.Load()
		if g == sent {
			continue
		}
		b, _ := orderwire.Append(buf[:0], &orderwire.Frame{Type: orderwire.Applied, G: g})
		if err := out.write(b); err != nil {
			return
		}
		sent = g
	}
}
