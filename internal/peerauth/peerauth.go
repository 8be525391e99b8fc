// Package peerauth authenticates the two ends of a connection between
// cluster members with a shared secret: an HMAC-SHA256 challenge-response
// handshake that also tells each side who the other is (cluster, role, id).
//
//	client                                   server
//	  | -- clientHello: nonceC, helloC ------> |  cluster must match
//	  | <-- serverHello: nonceS, helloS, ----- |
//	  |         macS = MAC("server")           |
//	  |  verify macS, cluster                  |
//	  | -- clientProof: macC = MAC("client") > |  verify macC, accept(helloC)
//	  | <-- welcome: MAC("welcome") ---------- |  or refusal (reason, no MAC)
//
// MAC(label) = HMAC-SHA256(secret, domain | label | nonceC | nonceS |
// helloC | helloS), hellos length-prefixed. Both nonces are fresh random
// 32-byte values, so a recorded proof never verifies in another handshake.
// Proofs are compared in constant time.
//
// The handshake authenticates the peer at connection setup; later traffic
// on the connection is not protected against an on-path attacker who can
// inject into an established TCP stream (use a private network or a tunnel
// for that). See docs/design-peerauth.md.
package peerauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
)

// Roles of a connecting peer.
const (
	RoleNode      = "node"      // a kvs replica talking to another replica
	RoleSequencer = "sequencer" // the middlebox's write-order stream to nodes
)

// MinSecret is the shortest accepted cluster secret, in bytes.
const MinSecret = 16

const (
	nonceSize = 32
	macSize   = sha256.Size
	maxField  = 255
	// MaxFrame bounds every handshake frame: an unauthenticated peer can
	// make the reader allocate at most this much.
	MaxFrame = 1024

	domain = "sdnkvs-peerauth-v1\x00"
)

// Frame types.
const (
	msgClientHello byte = 1
	msgServerHello byte = 2
	msgClientProof byte = 3
	msgWelcome     byte = 4
	msgRefuse      byte = 5
)

var magic = [4]byte{'S', 'K', 'P', 'A'}

// Errors.
var (
	ErrAuth      = errors.New("peerauth: authentication failed (wrong secret or forged handshake)")
	ErrCluster   = errors.New("peerauth: peer belongs to another cluster")
	ErrMalformed = errors.New("peerauth: malformed handshake frame")
	ErrRefused   = errors.New("peerauth: refused by peer")
)

// Hello says who one end of a connection is.
type Hello struct {
	Cluster string // cluster id; both ends must agree
	Role    string // RoleNode or RoleSequencer
	ID      uint64 // node id (nodes), or an instance id
}

func (h Hello) validate() error {
	if h.Cluster == "" || len(h.Cluster) > maxField {
		return fmt.Errorf("peerauth: cluster id must be 1..%d bytes", maxField)
	}
	if h.Role == "" || len(h.Role) > maxField {
		return fmt.Errorf("peerauth: role must be 1..%d bytes", maxField)
	}
	return nil
}

func appendHello(b []byte, h Hello) []byte {
	b = append(b, byte(len(h.Cluster)))
	b = append(b, h.Cluster...)
	b = append(b, byte(len(h.Role)))
	b = append(b, h.Role...)
	return binary.BigEndian.AppendUint64(b, h.ID)
}

// parseHello decodes a hello from the front of b and returns the rest.
func parseHello(b []byte) (Hello, []byte, error) {
	var h Hello
	if len(b) < 1 {
		return h, nil, ErrMalformed
	}
	n := int(b[0])
	if n == 0 || len(b) < 1+n+1 {
		return h, nil, ErrMalformed
	}
	h.Cluster = string(b[1 : 1+n])
	b = b[1+n:]
	n = int(b[0])
	if n == 0 || len(b) < 1+n+8 {
		return h, nil, ErrMalformed
	}
	h.Role = string(b[1 : 1+n])
	h.ID = binary.BigEndian.Uint64(b[1+n:])
	return h, b[1+n+8:], nil
}

// LoadSecret reads a cluster secret from path. A trailing newline is not
// part of the secret. It fails on a missing, empty or short (< MinSecret
// bytes) file, and logs a warning when the file is readable by others.
func LoadSecret(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("peerauth: no secret file given")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("peerauth: secret file: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	switch {
	case len(s) == 0:
		return nil, fmt.Errorf("peerauth: secret file %s is empty", path)
	case len(s) < MinSecret:
		return nil, fmt.Errorf("peerauth: secret in %s is %d bytes, need at least %d", path, len(s), MinSecret)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o004 != 0 {
		slog.Warn("peerauth: secret file is world-readable", "path", path, "mode", fi.Mode().Perm().String())
	}
	return []byte(s), nil
}

// transcript holds what both proofs cover.
type transcript struct {
	nonceC, nonceS []byte
	helloC, helloS []byte // encoded
}

func (t *transcript) mac(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(domain))
	m.Write([]byte{byte(len(label))})
	m.Write([]byte(label))
	for _, part := range [][]byte{t.nonceC, t.nonceS, t.helloC, t.helloS} {
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(len(part)))
		m.Write(l[:])
		m.Write(part)
	}
	return m.Sum(nil)
}

// writeFrame writes magic | type | len(2) | payload.
func writeFrame(w io.Writer, typ byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return ErrMalformed
	}
	_, err := w.Write(appendFrame(make([]byte, 0, 7+len(payload)), typ, payload))
	return err
}

// appendFrame appends magic | type | len(2) | payload (at most MaxFrame).
func appendFrame(b []byte, typ byte, payload []byte) []byte {
	b = append(b, magic[:]...)
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

// readFrame reads exactly one frame (no read-ahead, so the connection's
// later bytes stay unread).
func readFrame(r io.Reader) (byte, []byte, error) {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, truncated(err)
	}
	typ, n, err := parseHeader(h[:])
	if err != nil {
		return 0, nil, err
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, truncated(err)
	}
	return typ, p, nil
}

func parseHeader(h []byte) (byte, int, error) {
	if len(h) < 7 || [4]byte(h[:4]) != magic {
		return 0, 0, ErrMalformed
	}
	typ := h[4]
	if typ < msgClientHello || typ > msgRefuse {
		return 0, 0, ErrMalformed
	}
	n := int(binary.BigEndian.Uint16(h[5:]))
	if n > MaxFrame {
		return 0, 0, ErrMalformed
	}
	return typ, n, nil
}

func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("peerauth: handshake cut short: %w", err)
	}
	return fmt.Errorf("peerauth: %w", err)
}

func refusal(p []byte) error {
	return fmt.Errorf("%w: %s", ErrRefused, strings.ToValidUTF8(string(p), "?"))
}

func nonce() ([]byte, error) {
	b := make([]byte, nonceSize)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

func withDeadline(c net.Conn, deadline time.Time) func() {
	c.SetDeadline(deadline)
	return func() { c.SetDeadline(time.Time{}) }
}

// Client runs the handshake as the connecting side. It returns the
// authenticated peer's hello, or an error; on error the caller must close c.
// When an authenticated server refuses the client (ErrRefused after its
// proof verified), the server's hello is returned with the error.
// The deadline bounds the whole handshake.
func Client(c net.Conn, secret []byte, self Hello, deadline time.Time) (Hello, error) {
	return ClientEarly(c, secret, self, deadline, nil)
}

// ClientEarly is Client with early data: once the server has proved it
// knows the secret (its hello's MAC verified, the cluster matched), early
// is called with the server's hello and the bytes it returns are written
// right after the client's proof, in the same write, so the first request
// reaches the server with the proof instead of a round trip after the
// welcome (a catch-up dial over a 350 ms round trip saves 350 ms). The
// server reads the handshake frames exactly (no read-ahead), so the early
// bytes stay in the connection for whatever reads it after the handshake;
// if the server refuses, they are never read. An error from early ends the
// handshake with that error before the proof is sent. The caller still
// learns the outcome (welcome or refusal) before it reads any answer.
func ClientEarly(c net.Conn, secret []byte, self Hello, deadline time.Time, early func(peer Hello) ([]byte, error)) (Hello, error) {
	if len(secret) < MinSecret {
		return Hello{}, fmt.Errorf("peerauth: secret shorter than %d bytes", MinSecret)
	}
	if err := self.validate(); err != nil {
		return Hello{}, err
	}
	defer withDeadline(c, deadline)()
	t := transcript{helloC: appendHello(nil, self)}
	var err error
	if t.nonceC, err = nonce(); err != nil {
		return Hello{}, err
	}
	if err := writeFrame(c, msgClientHello, append(append([]byte(nil), t.nonceC...), t.helloC...)); err != nil {
		return Hello{}, fmt.Errorf("peerauth: %w", err)
	}
	typ, p, err := readFrame(c)
	if err != nil {
		return Hello{}, err
	}
	if typ == msgRefuse {
		return Hello{}, refusal(p)
	}
	if typ != msgServerHello || len(p) < nonceSize+macSize {
		return Hello{}, ErrMalformed
	}
	t.nonceS = p[:nonceSize]
	peer, rest, err := parseHello(p[nonceSize:])
	if err != nil || len(rest) != macSize {
		return Hello{}, ErrMalformed
	}
	t.helloS = p[nonceSize : len(p)-macSize]
	if !hmac.Equal(rest, t.mac(secret, "server")) {
		return Hello{}, ErrAuth
	}
	if peer.Cluster != self.Cluster {
		return Hello{}, fmt.Errorf("%w: ours %q, theirs %q", ErrCluster, self.Cluster, peer.Cluster)
	}
	proof := appendFrame(nil, msgClientProof, t.mac(secret, "client"))
	if early != nil {
		data, err := early(peer)
		if err != nil {
			return Hello{}, err
		}
		proof = append(proof, data...)
	}
	if _, err := c.Write(proof); err != nil {
		return Hello{}, fmt.Errorf("peerauth: %w", err)
	}
	typ, p, err = readFrame(c)
	if err != nil {
		return Hello{}, err
	}
	switch {
	case typ == msgRefuse:
		return peer, refusal(p) // the server proved itself: who refused us
	case typ != msgWelcome || len(p) != macSize:
		return Hello{}, ErrMalformed
	case !hmac.Equal(p, t.mac(secret, "welcome")):
		return Hello{}, ErrAuth
	}
	return peer, nil
}

// Server runs the handshake as the accepting side. accept, called once the
// peer has proved it knows the secret, decides whether this peer may
// connect (membership, role, id collision); its error is sent to the peer
// as the refusal reason. On error the caller must close c.
func Server(c net.Conn, secret []byte, self Hello, accept func(peer Hello) error, deadline time.Time) (Hello, error) {
	if len(secret) < MinSecret {
		return Hello{}, fmt.Errorf("peerauth: secret shorter than %d bytes", MinSecret)
	}
	if err := self.validate(); err != nil {
		return Hello{}, err
	}
	defer withDeadline(c, deadline)()
	typ, p, err := readFrame(c)
	if err != nil {
		return Hello{}, err
	}
	if typ != msgClientHello || len(p) < nonceSize {
		return Hello{}, ErrMalformed
	}
	t := transcript{nonceC: p[:nonceSize]}
	peer, rest, err := parseHello(p[nonceSize:])
	if err != nil || len(rest) != 0 {
		return Hello{}, ErrMalformed
	}
	t.helloC = p[nonceSize:]
	if peer.Cluster != self.Cluster {
		writeFrame(c, msgRefuse, []byte("wrong cluster"))
		return Hello{}, fmt.Errorf("%w: ours %q, theirs %q", ErrCluster, self.Cluster, peer.Cluster)
	}
	t.helloS = appendHello(nil, self)
	if t.nonceS, err = nonce(); err != nil {
		return Hello{}, err
	}
	out := append(append([]byte(nil), t.nonceS...), t.helloS...)
	out = append(out, t.mac(secret, "server")...)
	if err := writeFrame(c, msgServerHello, out); err != nil {
		return Hello{}, fmt.Errorf("peerauth: %w", err)
	}
	typ, p, err = readFrame(c)
	if err != nil {
		return Hello{}, err
	}
	if typ != msgClientProof || len(p) != macSize {
		return Hello{}, ErrMalformed
	}
	if !hmac.Equal(p, t.mac(secret, "client")) {
		writeFrame(c, msgRefuse, []byte("authentication failed"))
		return Hello{}, ErrAuth
	}
	if accept != nil {
		if err := accept(peer); err != nil {
			reason := err.Error()
			if len(reason) > 200 {
				reason = reason[:200]
			}
			writeFrame(c, msgRefuse, []byte(reason))
			return Hello{}, fmt.Errorf("%w: %w", ErrRefused, err)
		}
	}
	if err := writeFrame(c, msgWelcome, t.mac(secret, "welcome")); err != nil {
		return Hello{}, fmt.Errorf("peerauth: %w", err)
	}
	return peer, nil
}
