package kvs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
)

// batchWriter batches frames appended by many goroutines onto one
// connection: appenders encode into a shared buffer under a mutex; one
// goroutine swaps the buffer out and writes it with a single syscall, so
// every frame queued while a write is in progress goes out in the next one.
//
// batchWriter is safe for concurrent use.
type batchWriter struct {
	conn net.Conn

	mu     sync.Mutex
	buf    []byte
	spare  []byte
	closed bool
	limit  int
	kick   chan struct{}
	done   chan struct{}
}

func newBatchWriter(c net.Conn, limit int) *batchWriter {
	w := &batchWriter{
		conn:  c,
		buf:   make([]byte, 0, 64<<10),
		spare: make([]byte, 0, 64<<10),
		limit: limit,
		kick:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	go w.loop()
	return w
}

// lock returns the buffer to append to, or nil, false when the writer is
// closed or over its limit. The caller must call unlock with the new buffer.
func (w *batchWriter) lock() ([]byte, bool) {
	w.mu.Lock()
	if w.closed || len(w.buf) > w.limit {
		w.mu.Unlock()
		return nil, false
	}
	return w.buf, true
}

func (w *batchWriter) unlock(b []byte) {
	w.buf = b
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *batchWriter) loop() {
	defer close(w.done)
	for range w.kick {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return
		}
		b := w.buf
		w.buf, w.spare = w.spare[:0], b
		w.mu.Unlock()
		if len(b) == 0 {
			continue
		}
		if _, err := w.conn.Write(b); err != nil {
			w.close()
			return
		}
		if cap(b) > 4<<20 { // do not keep a huge buffer after a burst
			w.mu.Lock()
			w.spare = make([]byte, 0, 64<<10)
			w.mu.Unlock()
		}
	}
}

// close marks the writer closed and closes the connection (idempotent).
func (w *batchWriter) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.conn.Close()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// frameReader reads length-prefixed frames. The returned body is valid until
// the next call. Not safe for concurrent use.
type frameReader struct {
	rd      *bufio.Reader
	scratch []byte
	discard int
	max     int
}

var errFrameTooBig = errors.New("kvs: peer frame too large")

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{rd: bufio.NewReaderSize(r, 64<<10), max: max}
}

func (f *frameReader) next() ([]byte, error) {
	if f.discard > 0 {
		f.rd.Discard(f.discard)
		f.discard = 0
	}
	h, err := f.rd.Peek(4)
	if err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(h))
	if n > f.max {
		return nil, errFrameTooBig
	}
	if 4+n <= f.rd.Size() {
		b, err := f.rd.Peek(4 + n)
		if err != nil {
			return nil, err
		}
		f.discard = 4 + n
		return b[4:], nil
	}
	f.rd.Discard(4)
	if cap(f.scratch) < n {
		f.scratch = make([]byte, n)
	}
	b := f.scratch[:n]
	if _, err := io.ReadFull(f.rd, b); err != nil {
		return nil, err
	}
	return b, nil
}
