//go:build linux

package middlebox

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio"
)

// TestLifecycleNSKernelRSTs: the lifecycle's RSTs as Linux clients see
// them (kernel TCP in namespaces, the middlebox in-process on a real TUN,
// rejoin mode manual):
//
//   - a forked connection that would go on with joining DCs only is reset
//     (ECONNRESET), not kept on stale replicas;
//   - with no DC live, a new connection is refused (ECONNREFUSED: the
//     kernel accepted the middlebox's RST to its SYN), counted;
//   - after an admit, connections work again and forked writes reach both
//     DCs.
func TestLifecycleNSKernelRSTs(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	tb := testbedtest.ForTest(t, testbed.Config{DCs: forkDCs(2)})
	cfg := Config{VIP: testbed.VIP, MulticastPorts: []uint16{forkVIPPort},
		Lifecycle: &LifecycleConfig{LifecycleConfig: failover.LifecycleConfig{Mode: failover.RejoinManual}}}
	m := runInGateway(t, tb, netstackio.ModeOffload, cfg, forkNodePort)
	r := &forkRig{tb: tb, mb: m}
	echo := func(c net.Conn) { io.Copy(c, c) }
	r.listen(t, "dc1", 0, echo)
	r.listen(t, "dc2", 0, echo)
	node := func(dc string) netip.AddrPort { return netip.AddrPortFrom(tb.NodeAddrs(dc)[0], forkNodePort) }
	roundTrip := func(c net.Conn, msg string) error {
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		b := make([]byte, len(msg))
		_, err := io.ReadFull(c, b)
		return err
	}

	// dc2 misses bytes (down, back): joining, until admitted.
	m.SetNodeLive(node("dc2"), false)
	m.SetNodeLive(node("dc2"), true)
	if s, _ := m.DCLifecycle("dc2"); s.State != failover.DCStateJoining {
		t.Fatalf("dc2 %+v, want joining", s)
	}
	c := r.dial(t) // forked to dc1 (live) and dc2 (joining)
	if err := roundTrip(c, "forked to both"); err != nil {
		t.Fatal(err)
	}
	// dc1 goes: the flow would go on with joining dc2 alone.
	m.SetNodeLive(node("dc1"), false)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("forked connection left on a joining DC: read %v, want a reset", err)
	}
	// Nothing live now: refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = testbed.DialInNetns(ctx, tb.NS("client"), "tcp4", netip.AddrPortFrom(testbed.VIP, forkVIPPort).String())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial with no DC live: %v, want connection refused", err)
	}
	if m.Drop(ReasonNoCurrentDC) == 0 || m.life.refused.Load() == 0 {
		t.Fatal("refusal not counted")
	}
	// The operator admits dc2 (manual mode): served again.
	if err := m.AdmitDC("dc2"); err != nil {
		t.Fatal(err)
	}
	c2 := r.dial(t)
	if err := roundTrip(c2, "after the admit"); err != nil {
		t.Fatal(err)
	}
}
