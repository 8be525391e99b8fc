package kvs

// The coordinator runs ABD (Attiya, Bar-Noy, Dolev) for one key per
// operation, as an event-driven state machine: the caller starts an op, which
// sends phase-1 requests to every replica (itself included); responses arrive
// on peer reader goroutines (and the local committer) and drive the op
// through its phases without any goroutine of its own:
//
//	SET/DEL: phase 1 kindReadTag to all -> first q answers -> max tag m
//	         phase 2 kindWrite (m.Counter+1, unique writer) to all -> q acks -> done
//	GET:     phase 1 kindRead to all -> first q answers -> max (tag, value)
//	         if all q answers hold the max tag -> done
//	         else phase 2 kindWrite (same tag, value) to all -> q acks -> done
//
// A replica that cannot be sent to (disconnected) counts as failed at once,
// so an op fails fast when fewer than q replicas are reachable; otherwise
// the caller's deadline bounds it. Late answers carry an old (slot,
// generation) id and are ignored.

import (
	"errors"
	"sync"
	"time"
)

type opKind uint8

const (
	opGet opKind = iota
	opSet
	opDel
)

const (
	phaseIdle uint8 = iota
	phaseQuery
	phaseStore
	phaseDone
)

var (
	// ErrNoQuorum is returned when fewer than a quorum of replicas answered
	// or are reachable.
	ErrNoQuorum = errors.New("no quorum: too few replicas reachable")
	// ErrTimeout is returned when an operation missed its deadline; a write
	// that timed out may or may not have taken effect.
	ErrTimeout = errors.New("quorum timeout")
	// ErrBusy is returned when too many operations are in flight.
	ErrBusy = errors.New("too many operations in flight")
	// errIDCollision refuses writes on a node whose id another process uses.
	errIDCollision = errors.New("node id collision: writes refused")
)

// op is one quorum operation. Its fields are guarded by mu; key, val and
// bestVal are owned by the op until it is released.
type op struct {
	mu    sync.Mutex
	slot  uint32
	gen   uint32
	kind  opKind
	phase uint8

	key []byte
	val []byte

	acks, fails int
	best        Tag
	bestFlags   byte
	bestVal     []byte
	bestCount   int

	err  error
	done chan struct{}

	// senders counts peer goroutines still sending this op's phase 2 from
	// key and val after unlocking mu; release waits for them, so the op's
	// buffers are never reused under a sender.
	senders sync.WaitGroup
}

// Found reports whether a finished GET found a live value.
func (o *op) found() bool { return !o.best.IsZero() && o.bestFlags&flagTombstone == 0 }

type coordinator struct {
	n    *Node
	ops  []*op
	free chan uint32
}

const maxOps = 1 << 14

func newCoordinator(n *Node) *coordinator {
	c := &coordinator{n: n, ops: make([]*op, maxOps), free: make(chan uint32, maxOps)}
	for i := range c.ops {
		c.ops[i] = &op{slot: uint32(i), done: make(chan struct{}, 1)}
		c.free <- uint32(i)
	}
	return c
}

// release returns o to the pool; late answers to it are ignored.
func (c *coordinator) release(o *op) {
	o.senders.Wait()
	o.mu.Lock()
	o.gen++
	o.phase = phaseIdle
	// Do not keep a large value's buffers in the pool.
	if cap(o.val) > 64<<10 {
		o.val = nil
	}
	if cap(o.bestVal) > 64<<10 {
		o.bestVal = nil
	}
	if cap(o.key) > 4<<10 {
		o.key = nil
	}
	o.mu.Unlock()
	select {
	case <-o.done:
	default:
	}
	c.free <- o.slot
}

func opID(o *op) uint64 { return uint64(o.slot)<<32 | uint64(o.gen) }

// start begins o for key (and val for SET). key and val are copied.
func (c *coordinator) start(o *op, kind opKind, key, val []byte) {
	o.mu.Lock()
	o.kind = kind
	o.key = append(o.key[:0], key...)
	o.val = append(o.val[:0], val...)
	o.gen++
	o.phase = phaseQuery
	o.acks, o.fails, o.bestCount = 0, 0, 0
	o.best, o.bestFlags = Tag{}, 0
	o.bestVal = o.bestVal[:0]
	o.err = nil
	id := opID(o)
	k := o.key
	o.mu.Unlock()

	rk := kindRead
	if kind != opGet {
		rk = kindReadTag
	}
	for _, p := range c.n.peers {
		if !p.sendRead(rk, id, k) {
			c.deliverRead(id, false, Tag{}, 0, nil)
		}
	}
	// Local replica (k is stable: o cannot be restarted before release).
	t, flags, v, err := c.n.store.Get(k, rk == kindRead, c.localBuf())
	c.deliverRead(id, err == nil && c.n.voter.Load(), t, flags, v)
	c.putLocalBuf(v)
}

var localBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func (c *coordinator) localBuf() []byte { return (*localBufs.Get().(*[]byte))[:0] }
func (c *coordinator) putLocalBuf(b []byte) {
	if cap(b) <= 64<<10 {
		localBufs.Put(&b)
	}
}

func (c *coordinator) lookup(id uint64) *op {
	s := id >> 32
	if s >= uint64(len(c.ops)) {
		return nil
	}
	return c.ops[s]
}

func (c *coordinator) finish(o *op, err error) {
	o.phase = phaseDone
	o.err = err
	select {
	case o.done <- struct{}{}:
	default:
	}
}

// deliverRead handles one phase-1 answer (ok=false: replica failed).
func (c *coordinator) deliverRead(id uint64, ok bool, t Tag, flags byte, val []byte) {
	o := c.lookup(id)
	if o == nil {
		return
	}
	o.mu.Lock()
	if o.gen != uint32(id) || o.phase != phaseQuery {
		o.mu.Unlock()
		return
	}
	if !ok {
		o.fails++
		if c.n.size-o.fails < c.n.quorum {
			c.finish(o, ErrNoQuorum)
		}
		o.mu.Unlock()
		return
	}
	o.acks++
	switch cmp := t.Compare(o.best); {
	case o.acks == 1 || cmp > 0:
		o.best, o.bestFlags, o.bestCount = t, flags, 1
		o.bestVal = append(o.bestVal[:0], val...)
	case cmp == 0:
		o.bestCount++
	}
	if o.acks < c.n.quorum {
		o.mu.Unlock()
		return
	}
	// Quorum of answers: decide phase 2.
	var (
		wt Tag
		wf byte
		wv []byte
	)
	switch o.kind {
	case opGet:
		if o.bestCount >= c.n.quorum {
			c.finish(o, nil)
			o.mu.Unlock()
			return
		}
		wt, wf, wv = o.best, o.bestFlags, o.bestVal
	case opSet, opDel:
		if c.n.collision.Load() {
			c.finish(o, errIDCollision)
			o.mu.Unlock()
			return
		}
		if o.best.Counter >= MaxCounter {
			// Replicas refuse counters above MaxCounter, so this only
			// happens at the very end of the counter space: fail rather
			// than wrap (a wrapped tag would lose to the stored one while
			// the client is told +OK).
			c.finish(o, errTagExhaust)
			o.mu.Unlock()
			return
		}
		seq, err := c.n.store.NextWriter()
		if err != nil {
			c.finish(o, err)
			o.mu.Unlock()
			return
		}
		wt = Tag{Counter: o.best.Counter + 1, Writer: uint64(c.n.cfg.ID)<<48 | seq}
		if o.kind == opDel {
			wf = flagTombstone
		} else {
			wv = o.val
		}
		// The op's answer is the tag it wrote.
		o.best, o.bestFlags = wt, wf
	}
	o.gen++
	o.phase = phaseStore
	o.acks, o.fails = 0, 0
	id2 := opID(o)
	k := o.key
	o.senders.Add(1)
	o.mu.Unlock()
	c.sendWrite(id2, k, wt, wf, wv)
	o.senders.Done()
}

// sendWrite sends phase 2 to every replica. k and v stay valid until the op
// is released, and every sender copies them.
func (c *coordinator) sendWrite(id uint64, k []byte, t Tag, flags byte, v []byte) {
	for _, p := range c.n.peers {
		if !p.sendWrite(id, k, t, flags, v) {
			c.deliverAck(id, false)
		}
	}
	c.n.store.Put(k, t, flags, v, id, c)
}

// writeDone is the local replica's answer to phase 2.
func (c *coordinator) writeDone(id uint64, ok bool, _ Tag) { c.deliverAck(id, ok && c.n.voter.Load()) }

// deliverAck handles one phase-2 answer.
func (c *coordinator) deliverAck(id uint64, ok bool) {
	o := c.lookup(id)
	if o == nil {
		return
	}
	o.mu.Lock()
	if o.gen != uint32(id) || o.phase != phaseStore {
		o.mu.Unlock()
		return
	}
	if ok {
		o.acks++
		if o.acks >= c.n.quorum {
			c.finish(o, nil)
		}
	} else {
		o.fails++
		if c.n.size-o.fails < c.n.quorum {
			c.finish(o, ErrNoQuorum)
		}
	}
	o.mu.Unlock()
}

// deadline is one batch's deadline: a timer that, once fired, stays fired.
// Not safe for concurrent use.
type deadline struct {
	t     *time.Timer
	fired bool
}

func (d *deadline) reset(timeout time.Duration) {
	if d.t == nil {
		d.t = time.NewTimer(timeout)
	} else {
		d.t.Reset(timeout)
	}
	d.fired = false
}

func (d *deadline) stop() {
	if d.t != nil {
		d.t.Stop()
	}
}

// wait blocks until o finishes or d passes; on timeout o is marked done with
// ErrTimeout (late answers are then ignored).
func (c *coordinator) wait(o *op, d *deadline) error {
	timedOut := false
	if d.fired {
		select {
		case <-o.done:
		default:
			timedOut = true
		}
	} else {
		select {
		case <-o.done:
		case <-d.t.C:
			d.fired = true
			select {
			case <-o.done:
			default:
				timedOut = true
			}
		}
	}
	o.mu.Lock()
	if timedOut && o.phase != phaseDone {
		o.gen++
		c.finish(o, ErrTimeout)
	}
	err := o.err
	o.mu.Unlock()
	return err
}

// acquireOp returns a free op, waiting until d passes.
func (c *coordinator) acquireOp(d *deadline) (*op, error) {
	select {
	case s := <-c.free:
		return c.ops[s], nil
	default:
	}
	if d.fired {
		return nil, ErrBusy
	}
	select {
	case s := <-c.free:
		return c.ops[s], nil
	case <-d.t.C:
		d.fired = true
		return nil, ErrBusy
	}
}
