//go:build linux

package goodput

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// stream opens one connection from the client namespace of tb to dst,
// writes for cfg.Duration while sampling what each sink has received, then
// closes its side and waits until every sink has read to the end. The
// sinks must be idle (no other connection) and must be the servers dst
// reaches. cfg has its defaults filled in.
func stream(ctx context.Context, cfg Config, tb *testbed.Testbed, dst netip.AddrPort, sinks []*Sink) (Result, error) {
	r := Result{N: len(sinks)}
	for _, s := range sinks {
		s.Reset()
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := testbed.DialInNetns(dctx, tb.NS("client"), "tcp4", dst.String())
	cancel()
	if err != nil {
		return r, fmt.Errorf("dial %v: %w", dst, err)
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	raw, err := tc.SyscallConn()
	if err != nil {
		return r, err
	}
	acked := func() int64 {
		var v int64 = -1
		raw.Control(func(fd uintptr) { v = bytesAcked(fd) })
		return v
	}

	start := time.Now()
	stop := start.Add(cfg.Duration)
	var sent atomic.Int64
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		tc.SetWriteDeadline(stop)
		for {
			n, err := tc.Write(buf)
			sent.Add(int64(n))
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
					err = nil
				}
				werr <- err
				return
			}
		}
	}()

	sample := func() Sample {
		s := Sample{T: time.Since(start), Servers: make([]int64, len(sinks)), ClientAcked: acked()}
		for i, k := range sinks {
			s.Servers[i] = k.Bytes()
		}
		return s
	}
	r.Samples = append(r.Samples, sample())
	tick := time.NewTicker(cfg.Interval)
	var writeErr error
	writing := true
	for writing {
		select {
		case <-ctx.Done():
			tc.SetWriteDeadline(time.Now())
			<-werr
			return r, ctx.Err()
		case writeErr = <-werr:
			writing = false
		case <-tick.C:
			r.Samples = append(r.Samples, sample())
		}
	}
	tick.Stop()
	// The closing sample; one right after a tick replaces it (a tiny
	// interval would make a meaningless rate).
	if last := r.Samples[len(r.Samples)-1]; time.Since(start)-last.T < cfg.Interval/2 && len(r.Samples) > 1 {
		r.Samples = r.Samples[:len(r.Samples)-1]
	}
	r.Samples = append(r.Samples, sample())
	r.Sent = sent.Load()
	if writeErr != nil {
		return r, fmt.Errorf("write after %d bytes: %w", r.Sent, writeErr)
	}
	if err := tc.CloseWrite(); err != nil {
		return r, fmt.Errorf("close write: %w", err)
	}
	// Every sink reads to the client's FIN; a slow one gets time to drain
	// what was in flight (its share of the send buffer and the link queue).
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r.Received = make([]int64, len(sinks))
	for i, s := range sinks {
		v, err := s.WaitDone(wctx)
		r.Received[i] = v
		if err != nil {
			return r, fmt.Errorf("server %d: %w (received %d of %d bytes)", i+1, err, v, r.Sent)
		}
	}
	r.Mbps, r.ClientMbps = steady(r.Samples, cfg.Warmup)
	return r, nil
}

// measure runs f and sets the result's Drops.
func measure(tb *testbed.Testbed, f func() (Result, error)) (Result, error) {
	before, ok1 := tb.Drops()
	r, err := f()
	r.Drops = -1
	if after, ok2 := tb.Drops(); ok1 && ok2 {
		r.DropCounts = after.Sub(before)
		r.Drops = r.DropCounts.Total()
	}
	return r, err
}

// clientSysctls sets /proc/sys keys in the client namespace and returns a
// function restoring the old values.
func clientSysctls(tb *testbed.Testbed, kv map[string]string) (restore func() error, err error) {
	old := map[string]string{}
	restore = func() error {
		return testbed.InNetns(testbed.NetnsPath(tb.NS("client")), func() error {
			for k, v := range old {
				if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err = testbed.InNetns(testbed.NetnsPath(tb.NS("client")), func() error {
		for k, v := range kv {
			b, err := os.ReadFile(filepath.Join("/proc/sys", k))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
			}
			old[k] = strings.TrimSpace(string(b))
		}
		return nil
	})
	if err != nil {
		restore()
		return nil, err
	}
	return restore, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// steady returns the goodput after warm-up (the first sample at or after
// warmup to the last sample) from the servers' minimum and from the
// client's acknowledged bytes, in Mbit/s.
func steady(ss []Sample, warmup time.Duration) (servers, client float64) {
	if len(ss) < 2 {
		return 0, 0
	}
	i := 0
	for i < len(ss)-2 && ss[i].T < warmup {
		i++
	}
	a, b := ss[i], ss[len(ss)-1]
	dt := (b.T - a.T).Seconds()
	if dt <= 0 {
		return 0, 0
	}
	servers = float64(b.Min()-a.Min()) * 8 / dt / 1e6
	if a.ClientAcked >= 0 && b.ClientAcked >= 0 {
		client = float64(b.ClientAcked-a.ClientAcked) * 8 / dt / 1e6
	}
	return servers, client
}
