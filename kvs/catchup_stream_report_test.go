//go:build linux

package kvs

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// TestServedStreamReport: a stream whose reader stalls reports its busy
// time and the time the receive window held it back (real loopback TCP,
// the kernel's TCP_INFO). The send-buffer counter is the field next to
// it; loopback's 64 KiB segments do not reach the kernel's condition for
// it, the WAN bench does (docs/design-lifecycle.md, "On the WAN").
func TestServedStreamReport(t *testing.T) {
	n := &Node{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	read := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			read <- err
			return
		}
		defer c.Close()
		<-release // the reader stalls: the window closes
		_, err = io.Copy(io.Discard, c)
		read <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := tcpSample(c)
	if !s.ok {
		t.Fatal("no TCP_INFO on a TCP connection")
	}
	wrote := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20)
		for i := 0; i < 64; i++ {
			if _, err := c.Write(buf); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	testenv.WaitFor(t, 20*time.Second, "the stalled reader's window holds the stream back", func() bool {
		return tcpSample(c).rwndUs > 0
	})
	close(release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	s.tail = true
	n.endServedStream(c, &s)
	if s.ok {
		t.Fatal("the stream stays open after its report")
	}
	st := &n.catchStats
	if st.ServedStreams.Load() != 1 || st.ServedBusyUs.Load() == 0 || st.ServedRwndUs.Load() == 0 || st.ServedRwndUs.Load() > st.ServedBusyUs.Load() {
		t.Fatalf("streams %d, busy %d us, window-limited %d us; want 1, and 0 < window-limited <= busy",
			st.ServedStreams.Load(), st.ServedBusyUs.Load(), st.ServedRwndUs.Load())
	}
	c.Close()
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	// A stream without a start sample is not reported.
	var none streamTCP
	n.endServedStream(nil, &none)
	if st.ServedStreams.Load() != 1 {
		t.Fatal("a stream that never started was reported")
	}
}
