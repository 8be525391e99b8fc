//go:build linux

package scenario

import (
	"bufio"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
)

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
				st.acked(p.id, now)
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
	var until time.Time
	if w.cfg.ReadReconnect > 0 {
		until = time.Now().Add(w.cfg.ReadReconnect)
	}
	for {
		if !until.IsZero() && time.Now().After(until) {
			return nil // a fresh connection: the middlebox's choice now
		}
		id := w.recent[rng.Uint64N(uint64(len(w.recent)))].Load()
		if w.cfg.ReadOld > 0 && len(w.writers) > 0 && rng.Float64() < w.cfg.ReadOld {
			if old := w.writers[rng.IntN(len(w.writers))].pick(rng.Uint64()); old != 0 {
				id = old
			}
		}
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
