package netstacktest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestTwoHostsTalkTCPOverMemPipe(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := MemPipe(PipeOptions{MTU: 1500})
	ca, sa := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	client, err := NewHost(a, HostOptions{Addrs: []netip.Addr{ca}})
	if err != nil {
		t.Fatal(err)
	}
	server, err := NewHost(b, HostOptions{Addrs: []netip.Addr{sa}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := server.Listen(netip.AddrPortFrom(sa, 6379))
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		n, _ := io.Copy(h, c)
		c.Write([]byte("+OK\r\n"))
		c.Close()
		if n != size {
			got <- nil
			return
		}
		got <- h.Sum(nil)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, netip.AddrPortFrom(sa, 6379))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(data)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "+OK\r\n" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	want := sha256.Sum256(data)
	if h := <-got; !bytes.Equal(h, want[:]) {
		t.Fatalf("server hash %x, want %x", h, want)
	}
	c.Close()
	ln.Close()
	client.Close()
	server.Close()
	if client.Err() != nil || server.Err() != nil {
		t.Fatalf("pump errors: %v, %v", client.Err(), server.Err())
	}
	testenv.WaitFor(t, 10*time.Second, "host goroutines to exit", func() bool {
		return runtime.NumGoroutine() <= before
	})
}
