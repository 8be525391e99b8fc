package netstackio_test

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio"
	"github.com/sdnkvs/sdnkvs/netstackio/netstacktest"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// TestStackTCPProbe wires the middlebox Stack to a gVisor host over a
// MemPipe, the way the middlebox does with its TUN (OutputFunc -> Write,
// Read -> Deliver), and opens a TCP connection from the VIP to a node: the
// Stack can carry probes and local services, with checksums validated on
// both sides.
func TestStackTCPProbe(t *testing.T) {
	vip := netip.MustParseAddr("10.200.100.1")
	node := netip.MustParseAddrPort("10.210.1.11:6379")
	st, err := netstackio.NewStack(vip, 1500)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, b := netstacktest.MemPipe(netstacktest.PipeOptions{})
	defer a.Close()
	host, err := netstacktest.NewHost(b, netstacktest.HostOptions{Addrs: []netip.Addr{node.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()

	out := make([][]byte, 1)
	st.SetOutput(func(buf []byte, offset int) {
		out[0] = buf
		a.Write(out, offset)
	})
	done := make(chan struct{})
	defer func() { a.Close(); <-done }()
	go func() {
		defer close(done)
		const off = virtio.HdrLen
		bufs := [][]byte{make([]byte, off+netstackio.MaxPacket)}
		sizes := make([]int, 1)
		for {
			n, err := a.Read(bufs, sizes, off)
			if err != nil {
				return
			}
			for i := 0; i < n; i++ {
				st.DeliverVnet(virtio.At(bufs[i], off), bufs[i][off:off+sizes[i]])
			}
		}
	}()

	ln, err := host.Listen(node)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("+PONG\r\n"))
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, st.NetStack(), tcpip.FullAddress{
		Addr: tcpip.AddrFrom4(node.Addr().As4()), Port: node.Port(),
	}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("probe dial from the VIP: %v", err)
	}
	defer c.Close()
	if got, err := netip.ParseAddrPort(c.LocalAddr().String()); err != nil || got.Addr() != vip {
		t.Fatalf("probe source %s, want the VIP", c.LocalAddr())
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "+PONG\r\n" {
		t.Fatalf("probe read %q, %v", reply, err)
	}
}

func TestInNetnsBadPath(t *testing.T) {
	ran := false
	err := netstackio.InNetns("/nonexistent/netns", func() error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("InNetns on a missing namespace: err %v, fn ran %v", err, ran)
	}
	if os.Geteuid() != 0 {
		return // setns needs CAP_SYS_ADMIN
	}
	want := errors.New("from fn")
	if err := netstackio.InNetns("/proc/self/ns/net", func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("fn error not returned: %v", err)
	}
}
