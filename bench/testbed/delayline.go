//go:build linux

package testbed

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// shaper is the pure timing core of one link direction: packets and a
// clock (ns on a monotonic base) in, a release time or a drop out.
//
//	departure = max(now, last departure) + size*8/rate
//	release   = departure + delay
//
// A packet is dropped (drop-tail) when the bytes still waiting for their
// departure, plus this packet, would exceed limit. With no rate there is no
// backlog; the caller bounds what it holds instead. Not safe for concurrent
// use.
type shaper struct {
	rate    uint64 // bits/s, 0 = unlimited
	delay   int64  // ns
	limit   int    // bytes of backlog
	lastDep int64
}

// admit decides the fate of a packet of size bytes arriving at now.
func (s *shaper) admit(size int, now int64) (release int64, ok bool) {
	if s.rate == 0 {
		return now + s.delay, true
	}
	start := max(now, s.lastDep)
	if backlog := float64(start-now) * float64(s.rate) / 8e9; backlog+float64(size) > float64(s.limit) {
		return 0, false
	}
	dep := start + int64(uint64(size)*8*1e9/s.rate)
	s.lastDep = dep
	return dep + s.delay, true
}

// LineStats counts one direction of a link. All fields are totals since
// the line started.
type LineStats struct {
	Packets   uint64 `json:"packets"`    // delivered
	Bytes     uint64 `json:"bytes"`      // delivered
	DropQueue uint64 `json:"drop_queue"` // queue full (drop-tail)
	DropLoss  uint64 `json:"drop_loss"`  // random loss
	DropCut   uint64 `json:"drop_cut"`   // link cut
	WriteErrs uint64 `json:"write_errs"` // destination refused a packet
}

type lineCounters struct {
	packets, bytes, dropQueue, dropLoss, dropCut, writeErrs atomic.Uint64
}

const slotSize = 2048 // > MTU 1500; TUN without offloads never hands more

type slot struct {
	buf     []byte
	n       int
	release int64
}

// DelayLine carries packets one way from src to dst with a delay, a rate
// cap, random loss and a bounded queue. src must return one packet per Read
// (a TUN fd does) and dst take one per Write. Reading and writing run on
// two goroutines owned by the line; packet buffers are recycled through a
// free list, so the steady state allocates nothing. Its methods are
// safe for concurrent use.
type DelayLine struct {
	src io.Reader
	dst io.Writer
	cut *atomic.Bool
	// loss is only touched by the reader goroutine.
	loss float64
	rng  *rand.Rand
	base time.Time

	mu     sync.Mutex
	sh     shaper
	slots  []slot
	head   int
	n      int
	held   int      // bytes held in slots
	maxHld int      // bound on held bytes
	free   [][]byte // packet buffers not in use (reused: no steady-state allocation)

	notify chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup
	ctr    lineCounters
	once   sync.Once
}

// LineConfig configures one direction.
type LineConfig struct {
	Delay      time.Duration
	Rate       uint64  // bits/s, 0 = unlimited
	Loss       float64 // 0..1
	QueueBytes int     // drop-tail bound on the backlog (0 = default)
}

// NewDelayLine starts a line from src to dst. cut, when non-nil and set,
// drops every packet (on arrival and at release). Stop it with Close.
func NewDelayLine(src io.Reader, dst io.Writer, cfg LineConfig, cut *atomic.Bool) *DelayLine {
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = DefaultQueueBytes(cfg.Rate, cfg.Delay)
	}
	if cut == nil {
		cut = new(atomic.Bool)
	}
	// Held bytes: the backlog plus what is in flight on the "wire".
	maxHeld := cfg.QueueBytes
	if cfg.Rate > 0 {
		maxHeld += int(float64(cfg.Rate) / 8 * cfg.Delay.Seconds())
	}
	nslots := min(maxHeld/256+256, 1<<17)
	l := &DelayLine{
		src: src, dst: dst, cut: cut,
		loss:   cfg.Loss,
		rng:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		base:   time.Now(),
		sh:     shaper{rate: cfg.Rate, delay: int64(cfg.Delay), limit: cfg.QueueBytes},
		slots:  make([]slot, nslots),
		free:   make([][]byte, 0, nslots),
		maxHld: maxHeld,
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	l.wg.Add(2)
	go l.reader()
	go l.writer()
	return l
}

func (l *DelayLine) now() int64 { return int64(time.Since(l.base)) }

// Stats returns a snapshot of the counters.
func (l *DelayLine) Stats() LineStats {
	return LineStats{
		Packets: l.ctr.packets.Load(), Bytes: l.ctr.bytes.Load(),
		DropQueue: l.ctr.dropQueue.Load(), DropLoss: l.ctr.dropLoss.Load(),
		DropCut: l.ctr.dropCut.Load(), WriteErrs: l.ctr.writeErrs.Load(),
	}
}

// Close tells both goroutines to stop; it does not wait (see Wait). A
// reader blocked in src.Read notices when Read returns: a TUN fd's Read
// returns within 50 ms; other sources must be closed by the caller.
func (l *DelayLine) Close() {
	l.once.Do(func() { close(l.done) })
}

// Wait blocks until both goroutines have exited.
func (l *DelayLine) Wait() { l.wg.Wait() }

func (l *DelayLine) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *DelayLine) reader() {
	defer l.wg.Done()
	if _, ok := l.src.(*tunFD); ok {
		// Raw fd reads on a dedicated real-time thread: packets are
		// stamped on arrival even when the machine is busy. The thread is
		// never unlocked, so it exits with the goroutine rather than
		// carrying its priority back into the Go scheduler.
		runtime.LockOSThread()
		realtimeThread()
	}
	scratch := make([]byte, slotSize)
	var spare []byte // buffer for the next packet; kept when it is dropped
	for {
		l.mu.Lock()
		full := l.n == len(l.slots)
		idx := (l.head + l.n) % len(l.slots)
		if !full && spare == nil && len(l.free) > 0 {
			spare = l.free[len(l.free)-1]
			l.free = l.free[:len(l.free)-1]
		}
		l.mu.Unlock()
		buf := scratch
		if !full {
			if spare == nil {
				spare = make([]byte, slotSize) // only while the peak grows
			}
			buf = spare
		}
		nr, err := l.src.Read(buf)
		if err != nil {
			if l.closed() || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				return
			}
			if errors.Is(err, errPollTimeout) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return
		}
		if nr == 0 {
			continue
		}
		if full {
			l.ctr.dropQueue.Add(1)
			continue
		}
		if l.cut.Load() {
			l.ctr.dropCut.Add(1)
			continue
		}
		if l.loss > 0 && l.rng.Float64() < l.loss {
			l.ctr.dropLoss.Add(1)
			continue
		}
		now := l.now()
		l.mu.Lock()
		if l.held+nr > l.maxHld {
			l.mu.Unlock()
			l.ctr.dropQueue.Add(1)
			continue
		}
		rel, ok := l.sh.admit(nr, now)
		if !ok {
			l.mu.Unlock()
			l.ctr.dropQueue.Add(1)
			continue
		}
		// The slot past the tail is never touched by the writer.
		l.slots[idx] = slot{buf: spare, n: nr, release: rel}
		spare = nil
		l.n++
		l.held += nr
		l.mu.Unlock()
		select {
		case l.notify <- struct{}{}:
		default:
		}
	}
}

// writer releases packets at their release time. It sleeps with
// nanosleep on a locked real-time thread with 1 ns timer slack: Go timers
// round sleeps up to whole milliseconds when the runtime blocks in epoll,
// which would add up to 1 ms per direction, and a busy machine would add
// more. The thread is never unlocked (it exits with the goroutine).
func (l *DelayLine) writer() {
	defer l.wg.Done()
	runtime.LockOSThread()
	realtimeThread()
	fineTimerSlack()
	for {
		l.mu.Lock()
		for l.n == 0 {
			l.mu.Unlock()
			select {
			case <-l.notify:
			case <-l.done:
				return
			}
			l.mu.Lock()
		}
		s := &l.slots[l.head]
		rel := s.release
		l.mu.Unlock()
		for {
			d := rel - l.now()
			if d <= 0 {
				break
			}
			if l.closed() {
				return
			}
			d = min(d, int64(5*time.Millisecond))
			nanosleep(d)
		}
		if l.cut.Load() {
			l.ctr.dropCut.Add(1)
		} else if _, err := l.dst.Write(s.buf[:s.n]); err != nil {
			if l.closed() || errors.Is(err, os.ErrClosed) {
				return
			}
			l.ctr.writeErrs.Add(1)
		} else {
			l.ctr.packets.Add(1)
			l.ctr.bytes.Add(uint64(s.n))
		}
		l.mu.Lock()
		l.held -= s.n
		l.free = append(l.free, s.buf)
		s.buf = nil
		l.head = (l.head + 1) % len(l.slots)
		l.n--
		l.mu.Unlock()
	}
}

// errPollTimeout is returned by tunFD.Read when no packet came within the
// poll interval, so the reader can check whether it should stop.
var errPollTimeout = errors.New("poll timeout")

// tunFD is a TUN device's non-blocking fd, read and written with raw
// syscalls (one packet per call). Read waits at most 50 ms.
type tunFD struct {
	fd   int
	name string
}

func (t *tunFD) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(t.fd, b)
		if err != unix.EAGAIN {
			if err != nil {
				return 0, fmt.Errorf("read %s: %w", t.name, err)
			}
			return n, nil
		}
		fds := []unix.PollFd{{Fd: int32(t.fd), Events: unix.POLLIN}}
		k, err := unix.Poll(fds, 50)
		if err != nil && err != unix.EINTR {
			return 0, fmt.Errorf("poll %s: %w", t.name, err)
		}
		if k == 0 {
			return 0, errPollTimeout
		}
	}
}

func (t *tunFD) Write(b []byte) (int, error) {
	n, err := unix.Write(t.fd, b)
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", t.name, err)
	}
	return n, nil
}

// Close closes the fd, which deletes the TUN device.
func (t *tunFD) Close() error { return unix.Close(t.fd) }
