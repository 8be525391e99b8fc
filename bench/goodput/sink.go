//go:build linux

package goodput

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"golang.org/x/sys/unix"
)

// AutoRcvBuf is the SO_RCVBUF that `--rcvbuf auto` picks: twice the
// bandwidth-delay product of a link of rate bit/s and round trip rtt (plus
// 2 ms, as the testbed sizes its queues), at least 128 KiB; 0 (the
// kernel's autotuning) for an unlimited link. The kernel doubles it, and
// the window it offers then stays below the bandwidth-delay product plus
// the emulator's default queue, so the sender does not overflow the queue
// even when the emulator's own delay under load stretches the round trip.
// Measured at 100 Mbit/s and 20 ms: no link drops for N = 1..6 (a 640 KiB
// buffer already overflows the queue at N = 1), where autotuning overflows
// it in slow start and, without SACK, recovers one segment per round trip.
func AutoRcvBuf(rate uint64, rtt time.Duration) int {
	if rate == 0 {
		return 0
	}
	return max(128<<10, int(2*float64(rate)/8*(rtt+2*time.Millisecond).Seconds()))
}

// Sink is a TCP server that reads and counts what one connection at a time
// sends. Safe for concurrent use.
type Sink struct {
	ln    net.Listener
	bytes atomic.Int64 // bytes of the current connection

	mu    sync.Mutex
	done  chan struct{} // closed when the current connection hit EOF
	conns map[net.Conn]bool
	wg    sync.WaitGroup
	err   error

	closeOnce sync.Once
	closeErr  error
}

// ListenSink starts a sink on addr inside network namespace ns; rcvbuf >
// 0 sets SO_RCVBUF on its connections.
func ListenSink(ns string, addr netip.AddrPort, rcvbuf int) (*Sink, error) {
	var ln net.Listener
	lc := net.ListenConfig{}
	if rcvbuf > 0 {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	err := testbed.InNetns(testbed.NetnsPath(ns), func() error {
		var err error
		ln, err = lc.Listen(context.Background(), "tcp4", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sink on %v in %s: %w", addr, ns, err)
	}
	s := &Sink{ln: ln, done: make(chan struct{}), conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the listening address.
func (s *Sink) Addr() net.Addr { return s.ln.Addr() }

func (s *Sink) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		done := s.done
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			buf := make([]byte, 256<<10)
			var err error
			for {
				var n int
				n, err = c.Read(buf)
				s.bytes.Add(int64(n))
				if err != nil {
					break
				}
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			select {
			case <-done:
			default:
				close(done)
			}
		}()
	}
}

// Reset prepares the sink for the next connection.
func (s *Sink) Reset() {
	s.mu.Lock()
	s.bytes.Store(0)
	s.done = make(chan struct{})
	s.err = nil
	s.mu.Unlock()
}

// Bytes returns what the current connection has delivered so far.
func (s *Sink) Bytes() int64 { return s.bytes.Load() }

// WaitDone waits until the current connection ended (EOF or error) and
// returns its byte count and read error.
func (s *Sink) WaitDone(ctx context.Context) (int64, error) {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.bytes.Load(), s.err
	case <-ctx.Done():
		return s.bytes.Load(), fmt.Errorf("no end of stream: %w", ctx.Err())
	}
}

// Close stops the sink, closes its connections and waits for its
// goroutines. It is idempotent.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s.closeErr
}
