package peerauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	secret = []byte("0123456789abcdef-cluster-secret")
	nodeA  = Hello{Cluster: "c1", Role: RoleNode, ID: 1}
	nodeB  = Hello{Cluster: "c1", Role: RoleNode, ID: 2}
)

type result struct {
	peer Hello
	err  error
}

func soon() time.Time { return time.Now().Add(5 * time.Second) }

// handshake runs Client(cs, cself) against Server(ss, sself) over a pipe.
func handshake(cs, ss []byte, cself, sself Hello, accept func(Hello) error) (client, server result) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	done := make(chan result, 1)
	go func() {
		p, err := Server(s, ss, sself, accept, soon())
		if err != nil {
			s.Close()
		}
		done <- result{p, err}
	}()
	p, err := Client(c, cs, cself, soon())
	if err != nil {
		c.Close()
	}
	client = result{p, err}
	return client, <-done
}

func TestHandshakeOK(t *testing.T) {
	var seen Hello
	cr, sr := handshake(secret, secret, nodeA, nodeB, func(p Hello) error { seen = p; return nil })
	if cr.err != nil || sr.err != nil {
		t.Fatalf("client %v, server %v", cr.err, sr.err)
	}
	if cr.peer != nodeB || sr.peer != nodeA || seen != nodeA {
		t.Fatalf("client saw %+v, server saw %+v, accept saw %+v", cr.peer, sr.peer, seen)
	}
}

func TestWrongSecret(t *testing.T) {
	other := []byte("another-secret-of-some-length")
	cr, sr := handshake(other, secret, nodeA, nodeB, nil)
	if !errors.Is(cr.err, ErrAuth) {
		t.Fatalf("client with wrong secret: %v, want ErrAuth", cr.err)
	}
	if sr.err == nil {
		t.Fatal("server accepted a client with a wrong secret")
	}
}

func TestWrongCluster(t *testing.T) {
	cr, sr := handshake(secret, secret, Hello{Cluster: "c2", Role: RoleNode, ID: 1}, nodeB, nil)
	if cr.err == nil || sr.err == nil || !errors.Is(sr.err, ErrCluster) {
		t.Fatalf("client %v, server %v; want both to fail with a cluster error", cr.err, sr.err)
	}
}

func TestAcceptRefuses(t *testing.T) {
	cr, sr := handshake(secret, secret, nodeA, nodeB, func(p Hello) error {
		return fmt.Errorf("node id %d is not a member", p.ID)
	})
	if !errors.Is(cr.err, ErrRefused) || !strings.Contains(cr.err.Error(), "not a member") {
		t.Fatalf("client: %v, want a refusal naming the reason", cr.err)
	}
	if cr.peer != nodeB {
		t.Fatalf("refused client learns the server %+v, want %+v", cr.peer, nodeB)
	}
	if !errors.Is(sr.err, ErrRefused) {
		t.Fatalf("server: %v", sr.err)
	}
}

// recorder keeps everything read from and written to a connection.
type recorder struct {
	net.Conn
	in, out bytes.Buffer
}

func (r *recorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.in.Write(b[:n])
	return n, err
}

func (r *recorder) Write(b []byte) (int, error) {
	r.out.Write(b)
	return r.Conn.Write(b)
}

// frames splits a recorded byte stream into frames.
func frames(t *testing.T, b []byte) [][]byte {
	var out [][]byte
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		start := len(b) - r.Len()
		if _, _, err := readFrame(r); err != nil {
			t.Fatal(err)
		}
		out = append(out, b[start:len(b)-r.Len()])
	}
	return out
}

// TestReplayToServer records a good client's frames and replays them to a
// fresh server: the server's new nonce makes the old proof worthless.
func TestReplayToServer(t *testing.T) {
	c, s := net.Pipe()
	rec := &recorder{Conn: c}
	go Server(s, secret, nodeB, nil, soon())
	if _, err := Client(rec, secret, nodeA, soon()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	sent := frames(t, rec.out.Bytes())
	if len(sent) != 2 {
		t.Fatalf("client sent %d frames, want 2", len(sent))
	}
	c2, s2 := net.Pipe()
	defer c2.Close()
	done := make(chan error, 1)
	go func() {
		_, err := Server(s2, secret, nodeB, nil, soon())
		s2.Close()
		done <- err
	}()
	go io.Copy(io.Discard, c2)
	c2.Write(sent[0])
	c2.Write(sent[1])
	if err := <-done; !errors.Is(err, ErrAuth) {
		t.Fatalf("replayed client proof: %v, want ErrAuth", err)
	}
}

// TestReplayToClient replays a recorded server's answers to a new client.
func TestReplayToClient(t *testing.T) {
	c, s := net.Pipe()
	rec := &recorder{Conn: s}
	go Client(c, secret, nodeA, soon())
	if _, err := Server(rec, secret, nodeB, nil, soon()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	sent := frames(t, rec.out.Bytes())
	c2, s2 := net.Pipe()
	defer s2.Close()
	go func() {
		readFrame(s2) // the new client's hello
		s2.Write(sent[0])
		readFrame(s2)
		s2.Write(sent[1])
	}()
	if _, err := Client(c2, secret, nodeA, soon()); !errors.Is(err, ErrAuth) {
		t.Fatalf("replayed server hello: %v, want ErrAuth", err)
	}
	c2.Close()
}

// TestForgedClient: an attacker without the secret sends a well-formed
// hello and a guessed proof.
func TestForgedClient(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	done := make(chan error, 1)
	accepted := false
	go func() {
		_, err := Server(s, secret, nodeB, func(Hello) error { accepted = true; return nil }, soon())
		s.Close()
		done <- err
	}()
	n := bytes.Repeat([]byte{7}, nonceSize)
	writeFrame(c, msgClientHello, append(n, appendHello(nil, nodeA)...))
	if _, _, err := readFrame(c); err != nil {
		t.Fatal(err)
	}
	writeFrame(c, msgClientProof, bytes.Repeat([]byte{1}, macSize))
	go io.Copy(io.Discard, c)
	if err := <-done; !errors.Is(err, ErrAuth) || accepted {
		t.Fatalf("forged proof: err %v, accept called %v", err, accepted)
	}
}

// TestTruncated cuts the client's stream after every possible byte count:
// the server never succeeds and never hangs past its deadline.
func TestTruncated(t *testing.T) {
	c, s := net.Pipe()
	rec := &recorder{Conn: c}
	go Server(s, secret, nodeB, nil, soon())
	if _, err := Client(rec, secret, nodeA, soon()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	full := rec.out.Bytes()
	for cut := 0; cut < len(full); cut++ {
		c, s := net.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := Server(s, secret, nodeB, nil, time.Now().Add(2*time.Second))
			done <- err
		}()
		go io.Copy(io.Discard, c)
		c.Write(full[:cut])
		c.Close()
		if err := <-done; err == nil {
			t.Fatalf("cut at %d: server succeeded", cut)
		}
		s.Close()
	}
}

func TestDeadline(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	_, err := Server(s, secret, nodeB, nil, time.Now().Add(50*time.Millisecond))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silent client: %v, want a timeout", err)
	}
}

func TestBadArgs(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	if _, err := Client(c, []byte("short"), nodeA, soon()); err == nil {
		t.Fatal("short secret accepted")
	}
	if _, err := Server(s, secret, Hello{Role: RoleNode}, nil, soon()); err == nil {
		t.Fatal("empty cluster accepted")
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if s, err := LoadSecret(write("ok", "0123456789abcdefXYZ\n")); err != nil || string(s) != "0123456789abcdefXYZ" {
		t.Fatalf("good secret: %q, %v", s, err)
	}
	for name, want := range map[string]string{"missing": "no such file", "empty": "is empty", "short": "need at least"} {
		p := filepath.Join(dir, name)
		switch name {
		case "empty":
			p = write(name, "\n")
		case "short":
			p = write(name, "abc")
		}
		if _, err := LoadSecret(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want error containing %q", name, err, want)
		}
	}
}

// FuzzServer feeds arbitrary bytes as a client: the server must never
// authenticate a peer without the secret, and never panic.
func FuzzServer(f *testing.F) {
	n := bytes.Repeat([]byte{7}, nonceSize)
	var seed bytes.Buffer
	writeFrame(&seed, msgClientHello, append(n, appendHello(nil, nodeA)...))
	writeFrame(&seed, msgClientProof, bytes.Repeat([]byte{1}, macSize))
	f.Add(seed.Bytes())
	f.Add([]byte("SKPA\x01\x00\x00"))
	f.Add([]byte("SKPA\x05\x00\x03abc"))
	f.Fuzz(func(t *testing.T, in []byte) {
		conn := &scripted{in: bytes.NewReader(in)}
		if p, err := Server(conn, secret, nodeB, nil, time.Time{}); err == nil {
			t.Fatalf("server authenticated %+v from fuzz input", p)
		}
	})
}

// FuzzClient feeds arbitrary bytes as a server's answers.
func FuzzClient(f *testing.F) {
	f.Add([]byte("SKPA\x05\x00\x03abc"))
	f.Add([]byte("SKPA\x02\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		conn := &scripted{in: bytes.NewReader(in)}
		if p, err := Client(conn, secret, nodeA, time.Time{}); err == nil {
			t.Fatalf("client authenticated %+v from fuzz input", p)
		}
	})
}

// FuzzParse checks the frame and hello parsers: never panic, and what
// parses re-encodes to the same bytes.
func FuzzParse(f *testing.F) {
	f.Add(appendHello(nil, nodeA))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, in []byte) {
		if typ, p, err := readFrame(bytes.NewReader(in)); err == nil {
			var b bytes.Buffer
			writeFrame(&b, typ, p)
			if !bytes.Equal(b.Bytes(), in[:b.Len()]) {
				t.Fatalf("frame round trip: %x vs %x", b.Bytes(), in)
			}
		}
		if h, rest, err := parseHello(in); err == nil {
			enc := appendHello(nil, h)
			if !bytes.Equal(append(enc, rest...), in) {
				t.Fatalf("hello round trip: %x vs %x", enc, in)
			}
		}
	})
}

// scripted is a net.Conn whose reads come from a fixed script and whose
// writes are discarded.
type scripted struct {
	net.Conn
	in *bytes.Reader
}

func (s *scripted) Read(b []byte) (int, error)       { return s.in.Read(b) }
func (s *scripted) Write(b []byte) (int, error)      { return len(b), nil }
func (s *scripted) SetDeadline(t time.Time) error    { return nil }
func (s *scripted) SetReadDeadline(time.Time) error  { return nil }
func (s *scripted) SetWriteDeadline(time.Time) error { return nil }

// tcpPair is a connected loopback TCP pair (net.Pipe's synchronous writes
// would block on early data the server has not read yet).
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- s
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestClientEarly(t *testing.T) {
	c, s := tcpPair(t)
	early := []byte("first request, sent with the proof")
	type srv struct {
		peer Hello
		err  error
		data []byte
	}
	done := make(chan srv, 1)
	go func() {
		p, err := Server(s, secret, nodeB, nil, soon())
		if err != nil {
			done <- srv{err: err}
			return
		}
		// The early bytes follow the handshake on the connection.
		b := make([]byte, len(early))
		s.SetReadDeadline(soon())
		_, err = io.ReadFull(s, b)
		done <- srv{peer: p, err: err, data: b}
	}()
	var sawPeer Hello
	p, err := ClientEarly(c, secret, nodeA, soon(), func(peer Hello) ([]byte, error) {
		sawPeer = peer
		return early, nil
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if p != nodeB || sawPeer != nodeB || r.peer != nodeA {
		t.Fatalf("client saw %+v, early saw %+v, server saw %+v", p, sawPeer, r.peer)
	}
	if !bytes.Equal(r.data, early) {
		t.Fatalf("server read %q after the handshake, want the early data %q", r.data, early)
	}
}

func TestClientEarlyNotSentUnauthenticated(t *testing.T) {
	// A server without the secret: the client never calls early.
	c, s := tcpPair(t)
	go func() { Server(s, []byte("another-secret-of-some-length"), nodeB, nil, soon()); s.Close() }()
	called := false
	_, err := ClientEarly(c, secret, nodeA, soon(), func(Hello) ([]byte, error) { called = true; return []byte("x"), nil })
	if !errors.Is(err, ErrAuth) || called {
		t.Fatalf("client against a server with another secret: err %v, early called %v; want ErrAuth, not called", err, called)
	}
	// An early callback's error ends the handshake before the proof.
	c2, s2 := tcpPair(t)
	srvErr := make(chan error, 1)
	go func() { _, err := Server(s2, secret, nodeB, nil, soon()); srvErr <- err }()
	want := errors.New("peer is not a node")
	_, err = ClientEarly(c2, secret, nodeA, soon(), func(Hello) ([]byte, error) { return nil, want })
	if !errors.Is(err, want) {
		t.Fatalf("early's error: got %v, want %v", err, want)
	}
	c2.Close()
	if err := <-srvErr; err == nil {
		t.Fatal("server completed a handshake whose client sent no proof")
	}
}
