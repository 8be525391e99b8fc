package netstacktest

import (
	"fmt"
	"sync"

	"github.com/sdnkvs/sdnkvs/netstackio"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// PipeOptions configures MemPipe. Zero fields take their defaults.
type PipeOptions struct {
	// MTU is the largest packet the link carries (default 1500). Larger
	// packets without GSO are dropped and counted as Invalid; GSO packets
	// are segmented to at most this size.
	MTU int
	// QueueLen is the number of packets each direction buffers (default and
	// minimum 1024). Writes into a full queue drop and count.
	QueueLen int
	// BatchSize is the value BatchSize reports (default 64).
	BatchSize int
	// Names of the two ends (default "pipe-a", "pipe-b").
	NameA, NameB string
}

// MemPipe returns two connected in-memory Devices: packets written to a are
// read from b and vice versa. Each direction is a bounded queue of
// fixed-size slots allocated up front; Write copies packets in (the caller
// keeps its buffers) and drops, counting, when the queue is full. The ends
// carry no offloads: Read returns a zero virtio-net header, Write finishes
// requested checksums and TCP segmentation in software.
//
// Close on one end makes its Read and Write return netstackio.ErrClosed
// (unblocking a waiting Read); packets the peer then writes towards it are
// dropped and counted. Each end follows the netstackio.Device concurrency
// rules and reports netstackio.Stats, where Dropped counts packets this end
// wrote that the peer's queue refused.
func MemPipe(opts PipeOptions) (a, b netstackio.Device) {
	if opts.MTU <= 0 {
		opts.MTU = 1500
	}
	if opts.QueueLen < 1024 {
		opts.QueueLen = 1024
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 64
	}
	if opts.NameA == "" {
		opts.NameA = "pipe-a"
	}
	if opts.NameB == "" {
		opts.NameB = "pipe-b"
	}
	qa := newPipeQueue(opts.QueueLen, opts.MTU) // read by a
	qb := newPipeQueue(opts.QueueLen, opts.MTU) // read by b
	ea := &pipeEnd{name: opts.NameA, mtu: opts.MTU, batch: opts.BatchSize, in: qa, out: qb}
	eb := &pipeEnd{name: opts.NameB, mtu: opts.MTU, batch: opts.BatchSize, in: qb, out: qa}
	for _, e := range []*pipeEnd{ea, eb} {
		e.scratch = make([]byte, opts.MTU)
		e.emitFn = e.emit
	}
	return ea, eb
}

// pipeQueue is a bounded ring of packet slots, one direction of a MemPipe.
type pipeQueue struct {
	mu     sync.Mutex
	slots  [][]byte // each of capacity mtu
	lens   []int
	head   int // next slot to read
	count  int
	closed bool          // the reading end closed
	ready  chan struct{} // capacity 1: "packets may be available"
	done   chan struct{} // closed when the reading end closes
}

func newPipeQueue(n, mtu int) *pipeQueue {
	q := &pipeQueue{
		slots: make([][]byte, n),
		lens:  make([]int, n),
		ready: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	backing := make([]byte, n*mtu)
	for i := range q.slots {
		q.slots[i] = backing[i*mtu : (i+1)*mtu : (i+1)*mtu]
	}
	return q
}

// push copies pkt into the queue; it reports false when the queue is full
// or its reader closed.
func (q *pipeQueue) push(pkt []byte) bool {
	q.mu.Lock()
	if q.closed || q.count == len(q.slots) {
		q.mu.Unlock()
		return false
	}
	i := (q.head + q.count) % len(q.slots)
	q.lens[i] = copy(q.slots[i], pkt)
	q.count++
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// pipeEnd is one end of a MemPipe.
type pipeEnd struct {
	name    string
	mtu     int
	batch   int
	in, out *pipeQueue
	netstackio.Counters

	// Write-side scratch, used only by Write (not concurrent with itself).
	scratch []byte
	emitFn  func([]byte) error
}

var _ netstackio.Device = (*pipeEnd)(nil)

func (e *pipeEnd) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("netstackio: offset %d < virtio.HdrLen", offset)
	}
	q := e.in
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return 0, netstackio.ErrClosed
		}
		if q.count > 0 {
			n := 0
			for n < len(bufs) && n < len(sizes) && q.count > 0 {
				slot := q.slots[q.head][:q.lens[q.head]]
				b := bufs[n]
				if len(b) < offset+len(slot) {
					// Caller's buffer too small: drop rather than truncate.
					e.Invalid.Add(1)
				} else {
					clear(b[offset-virtio.HdrLen : offset])
					sizes[n] = copy(b[offset:], slot)
					n++
				}
				q.head = (q.head + 1) % len(q.slots)
				q.count--
			}
			q.mu.Unlock()
			if n > 0 {
				e.Rx.Add(uint64(n))
				return n, nil
			}
			continue
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-q.done:
		}
	}
}

func (e *pipeEnd) Write(bufs [][]byte, offset int) (int, error) {
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("netstackio: offset %d < virtio.HdrLen", offset)
	}
	e.in.mu.Lock()
	closed := e.in.closed
	e.in.mu.Unlock()
	if closed {
		return 0, netstackio.ErrClosed
	}
	for _, b := range bufs {
		h := virtio.At(b, offset)
		pkt := b[offset:]
		if !netstackio.NeedsSoftwareOffload(h) {
			e.emit(pkt)
		} else if err := netstackio.SoftwareOffload(h, pkt, e.scratch, e.emitFn); err != nil {
			e.Invalid.Add(1)
			continue
		}
		e.Tx.Add(1)
	}
	return len(bufs), nil
}

// emit enqueues one finished packet towards the peer.
func (e *pipeEnd) emit(pkt []byte) error {
	switch {
	case len(pkt) > e.mtu:
		e.Invalid.Add(1)
	case !e.out.push(pkt):
		e.Dropped.Add(1)
	default:
		e.TxSegs.Add(1)
	}
	return nil
}

func (e *pipeEnd) BatchSize() int { return e.batch }
func (e *pipeEnd) MTU() int       { return e.mtu }
func (e *pipeEnd) Offload() bool  { return false }
func (e *pipeEnd) Name() string   { return e.name }

func (e *pipeEnd) Close() error {
	q := e.in
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.count = 0
		close(q.done)
	}
	return nil
}
