package scenario

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
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
	ids   []uint64 // acked write ids
	times []int64  // their ack times, ns after start
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

type pend struct {
	id   uint64
	sent int64
}

// writer keeps one write connection busy, reconnecting to the same
// address whenever it fails.
func (w *Workload) writer(ctx context.Context, idx int) {
	st := w.writers[idx]
	// Token bucket shared by this writer's successive connections.
	rate := w.cfg.Rate / float64(w.cfg.Writers)
	tb := &bucket{rate: rate, burst: float64(w.cfg.Window), last: time.Now()}
	w.connLoop(ctx, w.cfg.DialWrite, colWriteReconnects, colWriteResets, func(conn net.Conn) error {
		return w.writeConn(ctx, conn, st, tb)
	})
}

// connLoop runs one connection after another until ctx ends: dial, run
// (which returns when the connection fails), count the failure (and
// colReset when the peer reset or closed it) and every reconnection.
func (w *Workload) connLoop(ctx context.Context, dial func(context.Context) (net.Conn, error), colReconnect, colReset int, run func(net.Conn) error) {
	connected := false
	for ctx.Err() == nil {
		conn, err := w.dial(ctx, dial)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.add(colErrors, w.nowNS())
			pause(ctx, 50*time.Millisecond)
			continue
		}
		if connected {
			w.add(colReconnect, w.nowNS())
		}
		connected = true
		err = run(conn)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.add(colErrors, w.nowNS())
			if IsReset(err) {
				w.add(colReset, w.nowNS())
			}
		}
	}
}

// bucket paces writes: tokens accrue at rate per second up to burst.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// take returns how many writes may go now, at most max, and how long to
// wait when none may.
func (b *bucket) take(limit int) (int, time.Duration) {
	if b.rate <= 0 {
		return limit, 0
	}
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	n := min(limit, int(b.tokens))
	if n <= 0 {
		return 0, max(time.Millisecond, time.Duration((1-b.tokens)/b.rate*float64(time.Second)))
	}
	b.tokens -= float64(n)
	return n, 0
}

// writeConn pipelines SETs of fresh keys on conn until it fails, ctx ends
// or the generation changes (then it drains and returns nil).
func (w *Workload) writeConn(ctx context.Context, conn net.Conn, st *writerState, tb *bucket) error {
	gen := w.generation.Load()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(cctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	pending := make(chan pend, w.cfg.Window) // never blocks: slots bound it
	slots := make(chan struct{}, w.cfg.Window)
	recvErr := make(chan error, 1)
	var draining atomic.Bool
	go func() {
		br := bufio.NewReaderSize(conn, 64<<10)
		var err error
		for {
			if w.cfg.OpTimeout > 0 && len(pending) > 0 {
				conn.SetReadDeadline(time.Now().Add(w.cfg.OpTimeout))
			}
			var rep resp.Reply
			rep, err = resp.ReadReply(br)
			if err != nil {
				break
			}
			var p pend
			select {
			case p = <-pending:
				<-slots
			default:
				err = errors.New("reply without a request")
			}
			if err != nil {
				break
			}
			now := w.nowNS()
			if rep.IsOK() {
				st.ids = append(st.ids, p.id)
				st.times = append(st.times, now)
				w.add(colWrites, now)
				w.recent[w.recentPos.Add(1)%uint64(len(w.recent))].Store(p.id)
				w.afterCut(&w.firstWriteAfterCut, p.sent, now)
			} else {
				w.add(colErrors, now)
			}
			if draining.Load() && len(pending) == 0 {
				break
			}
		}
		recvErr <- err
		cancel()
	}()

	bw := bufio.NewWriterSize(conn, 64<<10)
	var cmd []byte
	val := make([]byte, 0, w.cfg.ValueSize)
	key := make([]byte, 0, len(w.cfg.KeyPrefix)+20)
	// send returns drained=true after a generation change once every
	// write in flight was answered; otherwise it runs until cctx ends or
	// a write fails.
	send := func() (drained bool, err error) {
		for {
			if w.generation.Load() != gen {
				if err := bw.Flush(); err != nil {
					return false, err
				}
				draining.Store(true)
				if len(pending) == 0 {
					return true, nil
				}
				<-cctx.Done()
				return true, nil
			}
			n, wait := tb.take(w.cfg.Window)
			if n == 0 {
				if err := bw.Flush(); err != nil {
					return false, err
				}
				select {
				case <-cctx.Done():
					return false, nil
				case <-time.After(wait):
				}
				continue
			}
			for range n {
				select {
				case slots <- struct{}{}:
				default:
					if err := bw.Flush(); err != nil {
						return false, err
					}
					select {
					case slots <- struct{}{}:
					case <-cctx.Done():
						return false, nil
					}
				}
				id := w.nextID.Add(1)
				pending <- pend{id: id, sent: w.nowNS()}
				key = strconv.AppendUint(append(key[:0], w.cfg.KeyPrefix...), id, 10)
				val = appendValue(val[:0], id, w.cfg.ValueSize)
				cmd = resp.AppendCommand(cmd[:0], []byte("SET"), key, val)
				if _, err := bw.Write(cmd); err != nil {
					return false, err
				}
			}
			if err := bw.Flush(); err != nil {
				return false, err
			}
		}
	}
	drained, err := send()
	if drained || err != nil {
		cancel()
		rerr := <-recvErr
		if drained {
			return nil
		}
		if rerr != nil && !errors.Is(rerr, net.ErrClosed) {
			return rerr // the receiver saw the failure first: its cause
		}
		return err
	}
	return <-recvErr
}

// reader does one MGET(marker, recent key) at a time on a connection,
// reconnecting whenever it fails.
func (w *Workload) reader(ctx context.Context, idx int) {
	rng := rand.New(rand.NewPCG(uint64(idx), uint64(time.Now().UnixNano())))
	w.connLoop(ctx, w.cfg.DialRead, colReadReconnects, colReadResets, func(conn net.Conn) error {
		return w.readConn(ctx, conn, rng)
	})
}

func (w *Workload) readConn(ctx context.Context, conn net.Conn, rng *rand.Rand) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 16<<10)
	var cmd []byte
	marker := []byte(MarkerKey)
	for {
		id := w.recent[rng.Uint64N(uint64(len(w.recent)))].Load()
		key := w.Key(id) // id 0 is never written: a miss is expected
		cmd = resp.AppendCommand(cmd[:0], []byte("MGET"), marker, key)
		sent := w.nowNS()
		if w.cfg.OpTimeout > 0 {
			conn.SetDeadline(time.Now().Add(w.cfg.OpTimeout))
		}
		if _, err := conn.Write(cmd); err != nil {
			return err
		}
		rep, err := resp.ReadReply(br)
		if err != nil {
			return err
		}
		now := w.nowNS()
		if rep.Kind != '*' || len(rep.Elems) != 2 {
			w.add(colErrors, now)
			continue
		}
		col := colDCBase + len(w.cfg.DCs)
		for i, d := range w.cfg.DCs {
			if string(rep.Elems[0].Str) == d {
				col = colDCBase + i
			}
		}
		w.add(col, now)
		w.add(colReads, now)
		if id != 0 && string(rep.Elems[1].Str) != string(w.Value(id)) {
			w.add(colStale, now)
		}
		w.readMu.Lock()
		w.reads = append(w.reads, now)
		w.readMu.Unlock()
		w.afterCut(&w.firstReadAfterCut, sent, now)
	}
}

// Acked returns every acknowledged write id and its ack time (ns after
// Start), writer by writer. Call after Stop.
func (w *Workload) Acked() (ids []uint64, times []int64) {
	for _, st := range w.writers {
		ids = append(ids, st.ids...)
		times = append(times, st.times...)
	}
	return ids, times
}

// ReadTimes returns the completion times (ns after Start) of successful
// reads. Call after Stop.
func (w *Workload) ReadTimes() []int64 {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	return append([]int64(nil), w.reads...)
}

// Bin is one second of the run.
type Bin struct {
	Second                          int
	Writes, Reads, Errors           int64
	WriteReconnects, ReadReconnects int64
	WriteResets, ReadResets, Stale  int64
	ReadsByDC                       []int64 // by WorkloadConfig.DCs, then unknown
}

// Bins returns the per-second counts from second 0 to upto (exclusive).
func (w *Workload) Bins(upto int) []Bin {
	upto = min(upto, len(w.bins))
	out := make([]Bin, upto)
	for s := range upto {
		b := w.bins[s]
		out[s] = Bin{
			Second: s, Writes: b[colWrites].Load(), Reads: b[colReads].Load(), Errors: b[colErrors].Load(),
			WriteReconnects: b[colWriteReconnects].Load(), ReadReconnects: b[colReadReconnects].Load(),
			WriteResets: b[colWriteResets].Load(), ReadResets: b[colReadResets].Load(), Stale: b[colStale].Load(),
		}
		for i := colDCBase; i < w.ncol; i++ {
			out[s].ReadsByDC = append(out[s].ReadsByDC, b[i].Load())
		}
	}
	return out
}

// Totals sums Bins over the whole run.
func (w *Workload) Totals() Bin {
	var t Bin
	t.ReadsByDC = make([]int64, w.ncol-colDCBase)
	for _, b := range w.Bins(len(w.bins)) {
		t.Writes += b.Writes
		t.Reads += b.Reads
		t.Errors += b.Errors
		t.WriteReconnects += b.WriteReconnects
		t.ReadReconnects += b.ReadReconnects
		t.WriteResets += b.WriteResets
		t.ReadResets += b.ReadResets
		t.Stale += b.Stale
		for i, v := range b.ReadsByDC {
			t.ReadsByDC[i] += v
		}
	}
	return t
}

// ProgressLine formats second s for the progress display.
func (w *Workload) ProgressLine(s int, note string) string {
	bs := w.Bins(s + 1)
	if s >= len(bs) {
		return ""
	}
	b := bs[s]
	line := fmt.Sprintf("t=%3ds  writes acked %6d/s  reads %6d/s", s+1, b.Writes, b.Reads)
	for i, d := range w.cfg.DCs {
		line += fmt.Sprintf(" %s %d", d, b.ReadsByDC[i])
	}
	line += fmt.Sprintf("  errors %d  reconnects w%d r%d  resets w%d r%d", b.Errors,
		b.WriteReconnects, b.ReadReconnects, b.WriteResets, b.ReadResets)
	if b.Stale > 0 {
		line += fmt.Sprintf("  STALE %d", b.Stale)
	}
	if note != "" {
		line += "  " + note
	}
	return line
}
