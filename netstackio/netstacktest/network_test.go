package netstacktest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestDirectTransfer moves 4 MiB each way between two hosts through the
// router (no middlebox) and compares hashes.
func TestDirectTransfer(t *testing.T) { testTransfer(t, nil) }

// TestTransferWithLoss drops one packet in 200 at random: TCP recovers.
func TestTransferWithLoss(t *testing.T) {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(7, 7))
	testTransfer(t, func(string, []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		return rng.IntN(200) != 0
	})
}

func testTransfer(t *testing.T, filter func(string, []byte) bool) {
	n := NewNetwork(NetworkOptions{Filter: filter})
	defer n.Close()
	a, err := n.AddHost("a", netip.MustParseAddr("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddHost("b", netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddHost("c", netip.MustParseAddr("10.0.0.3")); err == nil {
		t.Fatal("duplicate address accepted")
	}
	ln, err := b.ListenTCP(netip.MustParseAddrPort("0.0.0.0:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 4 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*31 + i>>9)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		c.Write(h.Sum(nil))
		c.Write(data)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, netip.MustParseAddrPort("10.0.0.3:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("after %d bytes: %v; router %+v", len(got), err, n.Stats())
	}
	want := sha256.Sum256(data)
	if len(got) != 32+size || !bytes.Equal(got[:32], want[:]) || !bytes.Equal(got[32:], data) {
		t.Fatalf("got %d bytes, hash or data differ", len(got))
	}
	if s := n.Stats(); s.NoRoute != 0 || s.Routed == 0 || (filter != nil) != (s.Filtered > 0) {
		t.Errorf("router stats %+v", s)
	}
	_ = net.ErrClosed
}

func TestPingAcrossHosts(t *testing.T) {
	n := NewNetwork(NetworkOptions{})
	defer n.Close()
	a, _ := n.AddHost("a", netip.MustParseAddr("10.0.0.1"))
	if _, err := n.AddHost("b", netip.MustParseAddr("10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, netip.MustParseAddr("10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := a.Ping(ctx2, netip.MustParseAddr("10.0.0.9")); err == nil {
		t.Fatal("ping of an unrouted address answered")
	}
	if n.Stats().NoRoute == 0 {
		t.Error("unrouted ping not counted")
	}
}
