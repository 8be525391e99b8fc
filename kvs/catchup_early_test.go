package kvs

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
)

// holdWelcome passes a server's handshake writes through, except that
// before the welcome (its second write) it reads what the client sent
// after its proof, with a deadline: bytes there came with the proof, not
// after the welcome.
type holdWelcome struct {
	net.Conn
	want   int
	mu     sync.Mutex
	writes int
	early  []byte
}

func (h *holdWelcome) Write(b []byte) (int, error) {
	h.mu.Lock()
	h.writes++
	if h.writes == 2 {
		buf := make([]byte, h.want)
		h.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := readFull(h.Conn, buf)
		h.early = buf[:n]
	}
	h.mu.Unlock()
	return h.Conn.Write(b)
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestCatchupDialSendsOpeningWithProof: a catch-up dial sends the stream's
// opening (the start and the pages asked ahead) with its handshake proof,
// so it is at the source before the source has sent its welcome; the
// source saves a round trip of the WAN before the first page.
func TestCatchupDialSendsOpeningWithProof(t *testing.T) {
	b := dcCluster(t, "B", nil, 64<<10, 100, func(*Config) {})
	n := b.Node(0)
	j := &catchupJob{id: 1, cursor: stampTag(12345)}
	opening := n.catchupOpening(j, 1)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		early []byte
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		h := &holdWelcome{Conn: c, want: len(opening)}
		_, err = peerauth.Server(h, testSecret, peerauth.Hello{Cluster: CatchupCluster, Role: peerauth.RoleNode, ID: 9}, nil, time.Now().Add(5*time.Second))
		h.mu.Lock()
		defer h.mu.Unlock()
		done <- result{early: h.early, err: err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := n.dialCatchup(ctx, ln.Addr().String(), opening)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("source handshake: %v", r.err)
	}
	if !bytes.Equal(r.early, opening) {
		t.Fatalf("before its welcome the source had %d of the opening's %d bytes: the driver waited for the welcome", len(r.early), len(opening))
	}
	// The opening is the start at the job's cursor and catchupAhead-1 nexts.
	fr := newFrameReader(bytes.NewReader(opening), maxCatchupFrame)
	var req request
	for i := 0; i < catchupAhead; i++ {
		body, err := fr.next()
		if err != nil || decodeReq(body, &req) != nil || req.kind != kindCatchup || req.id != uint64(i+1) {
			t.Fatalf("request %d of the opening: %v, %+v", i, err, req)
		}
		wantOp := catchupNext
		if i == 0 {
			wantOp = catchupStart
			if DecodeTag(req.key[1:]) != j.cursor {
				t.Fatalf("start at %v, want the job's cursor %v", DecodeTag(req.key[1:]), j.cursor)
			}
		}
		if req.key[0] != wantOp {
			t.Fatalf("request %d: op %d, want %d", i, req.key[0], wantOp)
		}
	}
}
