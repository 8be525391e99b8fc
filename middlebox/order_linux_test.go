package middlebox

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Every order stream connection carries TCP_USER_TIMEOUT and keepalives:
// a stream whose DC was cut ends and is redialed instead of lingering in
// retransmission backoff past the heal, when it would hold back the OPENs
// of new flows (refused as unsequenced by the node: a reply mismatch) and
// CATCHUP (restarted passes).
func TestOrderStreamDialedWithUserTimeout(t *testing.T) {
	r := newSeqRig(t, "")
	for _, o := range r.mb.seq.conns {
		o.mu.Lock()
		raw := o.raw
		o.mu.Unlock()
		if raw == nil {
			t.Fatalf("order stream to %s: no connection", o.addr)
		}
		var ut, ka int
		var gerr error
		if err := raw.Control(func(fd uintptr) {
			ut, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
			if gerr == nil {
				ka, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			}
		}); err != nil || gerr != nil {
			t.Fatal(err, gerr)
		}
		if time.Duration(ut)*time.Millisecond != orderUserTimeout || ka != 1 {
			t.Fatalf("order stream to %s: TCP_USER_TIMEOUT %d ms, SO_KEEPALIVE %d; want %v, 1", o.addr, ut, ka, orderUserTimeout)
		}
	}
}
