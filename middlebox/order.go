package middlebox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// The order stream to one node (docs/design-sequencer.md):
//
//	data path (under Middlebox.flows) ─push─► q (bounded)
//	data path, end of batch ─flush─► one non-blocking write of q ─► conn ─► node
//	                                  (or, if that cannot finish) writer goroutine ─► conn
//	                                                          reader goroutine ◄─ APPLIED
//
// The flush writes from the data path when it can do so without waiting,
// so a STAMP leaves before the batch's segments are written towards the
// DCs and the node rarely waits for it; the writer goroutine takes over
// whatever would block.
//
// On every (re)connection the writer runs the resync callback, which, under
// the flow-table lock, replaces the queue with HELLO plus OPEN and the
// unacknowledged STAMPs of the node's live sequenced flows; only then does
// the data path append to the queue again. So a frame lost with a broken
// connection, or dropped because the queue overflowed, is sent again unless
// every branch acknowledged its bytes more than the retention time
// (sequencer.DefaultRetain) ago; a node that still lacks a stamp then fails
// the write instead of guessing a tag.

// Dead connections. A node's DC can be cut off for a minute while its
// order connection has frames in flight: TCP then retransmits with
// exponential backoff, and after the heal the next retransmission may be
// half a minute away. Meanwhile the connection looks up and nothing on it
// moves: OPENs of new flows (the node refuses their writes as
// unsequenced, a reply the other DCs do not give: the middlebox removes
// the DC for a reply mismatch) and CATCHUP (no PROGRESS comes back: the
// pass is restarted every 5 s). So the connection is dialed with
// TCP_USER_TIMEOUT (orderUserTimeout: bytes unacknowledged that long end
// it) and keepalives (an idle one is probed): a dead stream ends within
// seconds and is redialed, fresh, as soon as the node is reachable.

// orderCluster and the roles are what the order stream's peerauth
// handshake says.
const orderCluster = "sdnkvs-order"

// Order stream timing.
const (
	orderDialTimeout  = 2 * time.Second
	orderWriteTimeout = 5 * time.Second
	orderBackoffMin   = 50 * time.Millisecond
	orderBackoffMax   = 2 * time.Second
	// orderUserTimeout ends a connection whose sent bytes stay
	// unacknowledged this long (above the WAN's RTT plus queueing under
	// load; under the lifecycle's 5 s PROGRESS timeout).
	orderUserTimeout = 3 * time.Second
	orderKeepAlive   = time.Second // idle time before a probe, and between probes
)

// orderConn is the order stream to one node. push is called by the data
// path; run owns the connection.
type orderConn struct {
	node   uint16 // global node index
	addr   string // node IP : order port
	limit  int    // queue bound in bytes
	secret []byte
	log    *slog.Logger
	resync func(o *orderConn)
	// progress receives the node's PROGRESS frames (reader goroutine) and
	// downHook runs when a session ends; both may be nil.
	progress func(node uint16, f *orderwire.Frame)
	downHook func(node uint16)
	now      func() int64 // Unix ns (the middlebox's clock) // fills q under the flow-table lock and o.mu

	mu    sync.Mutex // guards q, live, over, cur
	q     []byte     // encoded frames not yet handed to the writer
	live  bool       // resynced on a connection: the data path appends
	over  bool       // the queue overflowed since the last resync
	cur   net.Conn   // the session's connection (closed on overflow)
	raw   syscall.RawConn
	spare []byte // the writer's buffer (swapped with q)

	// wmu serialises writes to the connection (the writer goroutine's
	// swap-and-write, the data path's direct flush), so frames keep their
	// order. The data path only tries it.
	wmu     sync.Mutex
	writeFn func(fd uintptr) bool // one write of q into wn, werr (made once: no allocation per flush)
	wn      int
	werr    error

	wake    chan struct{} // cap 1
	pending atomic.Bool   // frames queued since the last flush
	up      atomic.Bool
	down    atomic.Int64  // Unix ns since when the stream is not live (0: live)
	applied atomic.Uint64 // highest G the node reported applied
	ups     atomic.Uint64 // connections established
	queued  atomic.Uint64 // frames queued
	dropped atomic.Uint64 // frames dropped by a queue overflow
	errs    atomic.Uint64 // connection failures (dial, auth, I/O, bad frame)
}

func newOrderConn(node uint16, addr string, limit int, secret []byte, log *slog.Logger, resync func(*orderConn), now int64) *orderConn {
	o := &orderConn{
		node: node, addr: addr, limit: limit, secret: secret, log: log.With("order_node", addr), resync: resync,
		q: make([]byte, 0, limit), spare: make([]byte, 0, limit), wake: make(chan struct{}, 1),
	}
	o.now = func() int64 { return time.Now().UnixNano() }
	o.down.Store(now)
	o.writeFn = func(fd uintptr) bool {
		o.wn, o.werr = syscall.Write(int(fd), o.q)
		if o.wn < 0 {
			o.wn = 0
		}
		return true // one attempt: never wait on the data path
	}
	return o
}

// push queues frame f if the stream is live; the writer is woken by the
// next flush (once per batch). It never blocks and does not allocate. When the queue is full, the queue is emptied, the stream stops
// being live and the writer reconnects (resync sends the flows' state
// again). It reports whether f was queued. Called with Middlebox.flows held.
func (o *orderConn) push(f *orderwire.Frame) bool {
	o.mu.Lock()
	if !o.live {
		o.mu.Unlock()
		return false
	}
	if len(o.q)+orderwire.MaxFrame > o.limit {
		// The node does not keep up: drop the queue and the connection
		// (a writer blocked on it returns at once); the next session's
		// resync sends what the node may still need.
		o.dropped.Add(1 + uint64(len(o.q)/orderwire.MaxFrame))
		o.q, o.live, o.over = o.q[:0], false, true
		c := o.cur
		o.cur = nil
		o.mu.Unlock()
		if c != nil {
			go c.Close()
		}
		o.signal()
		return false
	}
	o.q, _ = orderwire.Append(o.q, f)
	o.mu.Unlock()
	o.queued.Add(1)
	o.pending.Store(true)
	return true
}

// flush sends the frames queued since the last flush: at once, with one
// non-blocking write, when nobody else is writing and the socket takes
// them all; otherwise it wakes the writer. It never blocks.
func (o *orderConn) flush() {
	if !o.pending.Load() || !o.pending.Swap(false) {
		return
	}
	if !o.writeNow() {
		o.signal()
	}
}

// writeNow tries one non-blocking write of the whole queue; it reports
// whether the queue is empty afterwards.
func (o *orderConn) writeNow() bool {
	if !o.wmu.TryLock() {
		return false
	}
	defer o.wmu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.live || o.raw == nil {
		return false
	}
	if len(o.q) == 0 {
		return true
	}
	o.wn, o.werr = 0, nil
	if err := o.raw.Write(o.writeFn); err != nil || (o.werr != nil && o.werr != syscall.EAGAIN) {
		return false // the writer meets the error and reconnects
	}
	if o.wn > 0 {
		o.q = o.q[:copy(o.q, o.q[o.wn:])]
	}
	return len(o.q) == 0
}

// appendLocked appends f during a resync (o.mu held); the queue may exceed
// its bound here, once.
func (o *orderConn) appendLocked(f *orderwire.Frame) {
	o.q, _ = orderwire.Append(o.q, f)
	o.queued.Add(1)
}

func (o *orderConn) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// run dials, authenticates, resyncs and writes until ctx is done,
// reconnecting with exponential backoff.
func (o *orderConn) run(ctx context.Context) {
	backoff := orderBackoffMin
	for ctx.Err() == nil {
		err := o.session(ctx)
		o.mu.Lock()
		o.live, o.q = false, o.q[:0]
		o.mu.Unlock()
		if o.up.Swap(false) {
			o.log.Warn("order stream down", "err", err)
			o.down.CompareAndSwap(0, o.now())
			if o.downHook != nil && ctx.Err() == nil {
				o.downHook(o.node)
			}
		}
		if ctx.Err() != nil {
			return
		}
		o.errs.Add(1)
		if errors.Is(err, errSessionRan) {
			backoff = orderBackoffMin
		}
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(2*backoff, orderBackoffMax)
	}
}

// errSessionRan wraps the end of a session that got as far as resyncing,
// so the next dial starts with the shortest backoff.
var errSessionRan = errors.New("order stream ended")

func (o *orderConn) session(ctx context.Context) error {
	d := net.Dialer{Timeout: orderDialTimeout, Control: orderDialControl,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: orderKeepAlive, Interval: orderKeepAlive, Count: 3}}
	c, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	peer, err := peerauth.Client(c, o.secret, peerauth.Hello{Cluster: orderCluster, Role: peerauth.RoleSequencer}, time.Now().Add(orderDialTimeout))
	if err != nil {
		return err
	}
	if peer.Role != peerauth.RoleNode {
		return fmt.Errorf("order stream: peer role %q, want %q", peer.Role, peerauth.RoleNode)
	}
	var raw syscall.RawConn
	if sc, ok := c.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	o.mu.Lock()
	o.cur, o.raw = c, raw
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.cur, o.raw = nil, nil
		o.mu.Unlock()
	}()
	readErr := make(chan error, 1)
	go func() { readErr <- o.read(c) }()
	o.resync(o) // queue HELLO, OPENs, STAMPs; live from here on
	o.up.Store(true)
	o.down.Store(0)
	o.ups.Add(1)
	o.log.Info("order stream up")
	o.signal()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			return fmt.Errorf("%w: read: %v", errSessionRan, err)
		case <-o.wake:
		}
		if err := o.writeQueue(c); err != nil {
			return err
		}
	}
}

// writeQueue swaps the queue out and writes it, blocking (bounded by the
// write timeout), holding wmu so the data path's flush cannot interleave.
func (o *orderConn) writeQueue(c net.Conn) error {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	o.mu.Lock()
	if o.over {
		o.over = false
		o.mu.Unlock()
		return fmt.Errorf("%w: queue overflow", errSessionRan)
	}
	buf := o.q
	o.q = o.spare[:0]
	o.mu.Unlock()
	if len(buf) > 0 {
		c.SetWriteDeadline(time.Now().Add(orderWriteTimeout))
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("%w: write: %v", errSessionRan, err)
		}
	}
	if cap(buf) > 2*o.limit { // a large resync: do not keep it
		buf = make([]byte, 0, o.limit)
	}
	o.spare = buf[:0]
	return nil
}

// read consumes the node's frames: APPLIED raises the node's highest
// applied position, PROGRESS goes to the lifecycle; anything else ends
// the connection.
func (o *orderConn) read(c net.Conn) error {
	rd := orderwire.NewReader(c)
	var f orderwire.Frame
	for {
		if err := rd.ReadFrame(&f); err != nil {
			return err
		}
		if f.Type == orderwire.Progress {
			if o.progress != nil {
				o.progress(o.node, &f)
			}
			continue
		}
		if f.Type != orderwire.Applied {
			return fmt.Errorf("unexpected frame type %d from a node", f.Type)
		}
		for {
			cur := o.applied.Load()
			if f.G <= cur || o.applied.CompareAndSwap(cur, f.G) {
				break
			}
		}
	}
}
