//go:build linux

package scenario

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// WorkloadConfig configures the client side of a run.
type WorkloadConfig struct {
	// DialWrite and DialRead open a connection for a writer or a reader
	// (through the forked and the anycast port). Required when Writers
	// (Readers) > 0.
	DialWrite, DialRead func(ctx context.Context) (net.Conn, error)
	// Writers is the number of write connections; Window the writes in
	// flight on each (pipelined); Rate the total writes per second
	// (0: as fast as the windows allow).
	Writers, Window int
	Rate            float64
	// Readers is the number of read connections, each doing one
	// request/response read (MGET marker key) at a time.
	Readers int
	// ValueSize is the size of each written value (at least 16).
	ValueSize int
	// KeyPrefix makes the run's keys unique.
	KeyPrefix string
	// DCs names the DCs, to count which one served each read (by the
	// MarkerKey value).
	DCs []string
	// DialTimeout bounds each connection attempt; OpTimeout, if not zero,
	// bounds each read's round trip and each write's wait for its reply
	// (then the connection is closed and opened again).
	DialTimeout, OpTimeout time.Duration
	// MaxSeconds sizes the per-second series.
	MaxSeconds int
	// ReadOld is the fraction (0..1) of reads that ask for a key drawn
	// uniformly from every write acknowledged so far (the others ask for
	// a recently acknowledged one): reads of writes made during an
	// outage, to find a DC that missed them.
	ReadOld float64
	// ReadReconnect, if positive, makes each reader open a new
	// connection this often, so reads follow the middlebox's current
	// choice of DC (an anycast flow stays on its DC).
	ReadReconnect time.Duration
}

// Column indexes of a per-second bin.
const (
	colWrites = iota
	colReads
	colErrors
	colWriteReconnects
	colReadReconnects
	colWriteResets
	colReadResets
	colStale
	colDCBase // reads served per DC follow, then one for an unknown DC
)

// Workload drives writers and readers and records what they saw. Start it
// once; Stop ends it. Its methods are safe for concurrent use.
type Workload struct {
	cfg   WorkloadConfig
	start time.Time
	ncol  int

	bins   [][]atomic.Int64 // [second][column]
	nextID atomic.Uint64
	cutNS  atomic.Int64 // ns after start of the cut, 0: none yet
	// First completion (ns after start) of an operation sent at or after
	// the cut; 0: none yet.
	firstWriteAfterCut, firstReadAfterCut atomic.Int64
	recent                                [4096]atomic.Uint64 // recently acked ids for reads
	recentPos                             atomic.Uint64
	generation                            atomic.Uint64 // bumping it makes writers reconnect

	writers []*writerState
	readMu  sync.Mutex
	reads   []int64 // completion times (ns after start) of successful reads

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type writerState struct {
	mu    sync.Mutex
	ids   []uint64 // acked write ids
	times []int64  // their ack times, ns after start
}

// acked appends one acknowledged write.
func (st *writerState) acked(id uint64, at int64) {
	st.mu.Lock()
	st.ids = append(st.ids, id)
	st.times = append(st.times, at)
	st.mu.Unlock()
}

// pick returns a uniformly drawn acknowledged id of this writer (0: none).
func (st *writerState) pick(r uint64) uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.ids) == 0 {
		return 0
	}
	return st.ids[r%uint64(len(st.ids))]
}

// NewWorkload checks cfg and returns an unstarted workload.
func NewWorkload(cfg WorkloadConfig) (*Workload, error) {
	if cfg.Writers < 0 || cfg.Readers < 0 || cfg.Writers+cfg.Readers == 0 {
		return nil, errors.New("workload: want at least one writer or reader")
	}
	if cfg.Writers > 0 && cfg.DialWrite == nil || cfg.Readers > 0 && cfg.DialRead == nil {
		return nil, errors.New("workload: no dialer")
	}
	if cfg.Window <= 0 {
		cfg.Window = 1
	}
	if cfg.ValueSize < 16 {
		cfg.ValueSize = 16
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 3 * time.Second
	}
	if cfg.MaxSeconds <= 0 {
		cfg.MaxSeconds = 600
	}
	if cfg.Rate < 0 {
		return nil, errors.New("workload: negative rate")
	}
	if cfg.ReadOld < 0 || cfg.ReadOld > 1 {
		return nil, errors.New("workload: ReadOld out of 0..1")
	}
	w := &Workload{cfg: cfg, ncol: colDCBase + len(cfg.DCs) + 1}
	w.bins = make([][]atomic.Int64, cfg.MaxSeconds+1)
	for i := range w.bins {
		w.bins[i] = make([]atomic.Int64, w.ncol)
	}
	for range cfg.Writers {
		w.writers = append(w.writers, &writerState{})
	}
	return w, nil
}

// Start launches the writers and readers; time 0 of every record is now.
func (w *Workload) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.start = time.Now()
	for i := range w.cfg.Writers {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.writer(ctx, i) }()
	}
	for i := range w.cfg.Readers {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.reader(ctx, i) }()
	}
}

// Stop ends every connection (writes still in flight are not counted as
// acknowledged) and waits for the goroutines.
func (w *Workload) Stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// StartTime is time 0 of the records.
func (w *Workload) StartTime() time.Time { return w.start }

// Now is the time since Start.
func (w *Workload) Now() time.Duration { return time.Since(w.start) }

// MarkCut records that the near DC was cut now (time since Start).
func (w *Workload) MarkCut() time.Duration {
	d := max(w.Now(), 1)
	w.cutNS.Store(int64(d))
	w.firstReadAfterCut.Store(0)
	w.firstWriteAfterCut.Store(0)
	return d
}

// Reconnect makes every writer finish its in-flight writes and open a new
// connection (so new connections are forked to the DCs live now).
func (w *Workload) Reconnect() { w.generation.Add(1) }

// RecoveredAfterCut returns, for writes and reads, the time from the last
// MarkCut to the first completion of an operation sent after it (0 when
// none yet).
func (w *Workload) RecoveredAfterCut() (write, read time.Duration) {
	c := w.cutNS.Load()
	if c == 0 {
		return 0, 0
	}
	if f := w.firstWriteAfterCut.Load(); f > 0 {
		write = time.Duration(f - c)
	}
	if f := w.firstReadAfterCut.Load(); f > 0 {
		read = time.Duration(f - c)
	}
	return write, read
}

func (w *Workload) add(col int, at int64) {
	s := int(at / int64(time.Second))
	if s < 0 {
		s = 0
	}
	if s >= len(w.bins) {
		s = len(w.bins) - 1
	}
	w.bins[s][col].Add(1)
}

func (w *Workload) nowNS() int64 { return int64(time.Since(w.start)) }

// afterCut records a completion at now of an operation sent at sent.
func (w *Workload) afterCut(first *atomic.Int64, sent, now int64) {
	c := w.cutNS.Load()
	if c == 0 || sent < c {
		return
	}
	for {
		f := first.Load()
		if f != 0 && f <= now {
			return
		}
		if first.CompareAndSwap(f, now) {
			return
		}
	}
}

// Key returns the key of write id.
func (w *Workload) Key(id uint64) []byte {
	return strconv.AppendUint([]byte(w.cfg.KeyPrefix), id, 10)
}

// Value returns the value of write id: deterministic, so a checker can
// recompute it.
func (w *Workload) Value(id uint64) []byte {
	return appendValue(make([]byte, 0, w.cfg.ValueSize), id, w.cfg.ValueSize)
}

func appendValue(b []byte, id uint64, size int) []byte {
	n := len(b)
	b = append(b, 'v')
	b = strconv.AppendUint(b, id, 10)
	b = append(b, '.')
	for len(b)-n < size {
		b = append(b, byte('a'+(id+uint64(len(b)-n))%26))
	}
	return b
}

// IsReset reports whether err means the peer reset or closed the
// connection (as opposed to our own timeout or shutdown).
func IsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF)
}

func (w *Workload) dial(ctx context.Context, f func(context.Context) (net.Conn, error)) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, w.cfg.DialTimeout)
	defer cancel()
	return f(dctx)
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
