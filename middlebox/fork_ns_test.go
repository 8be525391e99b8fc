//go:build linux

package middlebox

// Issue 3's namespace tests of forked (multicast) connections, with Linux
// kernel TCP on the client and on every server, through the in-process
// middlebox on a real TUN in the testbed's gateway namespace:
//
//   - a 256 MiB upload forked to 3 DCs arrives byte-identical at each;
//   - ack gating: one DC's receiver stops reading, the client's
//     acknowledged bytes stop within that receiver's window; it resumes and
//     the transfer completes;
//   - redis-benchmark through the forked port against a redis-server per
//     DC: no errors, every DC ends with the same data;
//   - DCs with different MTUs, window scales, delays and a lossy link still
//     give a complete, correct transfer;
//   - cutting one DC mid-transfer: the connection continues on the others
//     without a reset, or is reset when below min-replicas.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio"
	"golang.org/x/sys/unix"
)

const (
	forkVIPPort  = 6391 // multicast port of the VIP in these tests
	forkNodePort = 6379 // where each DC's node listens
)

// forkRig is a testbed topology with the middlebox running in-process in
// the gateway namespace (offload TUN), forking forkVIPPort to node 0 of
// every DC.
type forkRig struct {
	tb *testbed.Testbed
	mb *Middlebox
}

func newForkRig(t *testing.T, tc testbed.Config, fork ackmerge.Config) *forkRig {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	tb := testbedtest.ForTest(t, tc)
	cfg := Config{VIP: testbed.VIP, MulticastPorts: []uint16{forkVIPPort}, Fork: fork}
	m := runInGateway(t, tb, netstackio.ModeOffload, cfg, forkNodePort)
	r := &forkRig{tb: tb, mb: m}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("middlebox stats %+v", m.Stats())
			for _, f := range m.Flows(0) {
				t.Logf("flow %+v branches %+v", f, f.Branches)
			}
		}
	})
	return r
}

// dcs are three DC configs named dc1..dc3 (veth links unless changed).
func forkDCs(n int) []testbed.DC {
	out := make([]testbed.DC, n)
	for i := range out {
		out[i] = testbed.DC{Name: fmt.Sprintf("dc%d", i+1), Nodes: 1}
	}
	return out
}

// forkServer is a TCP listener on node 0 of a DC. Its connections are
// tracked and closed on cleanup, so blocked handlers end.
type forkServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// forkListen listens on node 0 of DC dc; rcvbuf > 0 sets SO_RCVBUF on the
// listener (inherited by accepted connections).
func (r *forkRig) listen(t *testing.T, dc string, rcvbuf int, serve func(net.Conn)) *forkServer {
	t.Helper()
	addr := netip.AddrPortFrom(r.tb.NodeAddrs(dc)[0], forkNodePort)
	s := &forkServer{}
	lc := net.ListenConfig{}
	if rcvbuf > 0 {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	if err := testbed.InNetns(testbed.NetnsPath(r.tb.NS(dc)), func() error {
		var err error
		s.ln, err = lc.Listen(context.Background(), "tcp4", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		s.ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); serve(c) }()
		}
	}()
	return s
}

// dial connects the client to the VIP's multicast port.
func (r *forkRig) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := testbed.DialInNetns(ctx, r.tb.NS("client"), "tcp4", netip.AddrPortFrom(testbed.VIP, forkVIPPort).String())
	if err != nil {
		t.Fatalf("dial VIP: %v (middlebox %+v)", err, r.mb.Stats())
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(90 * time.Second))
	return c.(*net.TCPConn)
}

// forkAcked returns the bytes the peer acknowledged on c (TCP_INFO
// bytes_acked, which counts the SYN as one).
func forkAcked(t *testing.T, c *net.TCPConn) int64 {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int64
	var ierr error
	raw.Control(func(fd uintptr) {
		var ti *unix.TCPInfo
		ti, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if ierr == nil {
			v = int64(ti.Bytes_acked)
		}
	})
	if ierr != nil {
		t.Fatalf("TCP_INFO: %v", ierr)
	}
	return max(0, v-1)
}

// forkStream is a fast deterministic byte stream.
type forkStream struct{ r *rand.PCG }

func newForkStream(seed uint64) *forkStream { return &forkStream{rand.NewPCG(seed, ^seed)} }

func (p *forkStream) Read(b []byte) (int, error) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], p.r.Uint64())
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(p.r.Uint64())
	}
	return len(b), nil
}

// hashResult is what a hashing server saw.
type hashResult struct {
	dc  string
	n   int64
	sum [32]byte
	err error
}

// hashingServer reads to EOF, hashing, reports, then answers with the hash
// (identical at every DC that got identical bytes) and closes. read counts
// the bytes read so far.
func hashingServer(dc string, results chan<- hashResult, read *atomic.Int64) func(net.Conn) {
	return func(c net.Conn) {
		h := sha256.New()
		n, err := io.Copy(h, countingReader{c, read})
		var res hashResult
		res.dc, res.n, res.err = dc, n, err
		copy(res.sum[:], h.Sum(nil))
		results <- res
		if err == nil {
			c.Write(res.sum[:])
		}
	}
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if c.n != nil {
		c.n.Add(int64(n))
	}
	return n, err
}

// upload writes size bytes of stream seed to c (hashing them into h), then
// half-closes. It returns the write error.
func upload(c *net.TCPConn, seed uint64, size int64, h hash.Hash) error {
	if _, err := io.Copy(c, io.TeeReader(io.LimitReader(newForkStream(seed), size), h)); err != nil {
		return err
	}
	return c.CloseWrite()
}

// collect waits for want results (or the deadline) and returns them by DC.
func collect(t *testing.T, results <-chan hashResult, want int, d time.Duration) map[string]hashResult {
	t.Helper()
	out := map[string]hashResult{}
	deadline := time.After(d)
	for len(out) < want {
		select {
		case r := <-results:
			out[r.dc] = r
		case <-deadline:
			t.Fatalf("only %d of %d servers finished within %v: %+v", len(out), want, d, out)
		}
	}
	return out
}

// TestForkNSUpload256MiBToThreeDCs: a 256 MiB upload through the forked
// port arrives byte-identical (sha256) at each of three DCs, and the
// client gets the servers' (identical) answer.
func TestForkNSUpload256MiBToThreeDCs(t *testing.T) {
	r := newForkRig(t, testbed.Config{DCs: forkDCs(3)}, ackmerge.Config{})
	results := make(chan hashResult, 3)
	for _, dc := range []string{"dc1", "dc2", "dc3"} {
		r.listen(t, dc, 0, hashingServer(dc, results, nil))
	}
	const size = 256 << 20
	c := r.dial(t)
	up := sha256.New()
	werr := make(chan error, 1)
	go func() { werr <- upload(c, 42, size, up) }()
	got := make([]byte, 32)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("upload: %v", err)
	}
	want := up.Sum(nil)
	if string(got) != string(want) {
		t.Fatal("the answer the client got is not the hash of its upload")
	}
	if n, err := c.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("after the answer: %d bytes, %v; want EOF", n, err)
	}
	res := collect(t, results, 3, 30*time.Second)
	for dc, h := range res {
		if h.err != nil || h.n != size || string(h.sum[:]) != string(want) {
			t.Errorf("%s: %d bytes, err %v, hash match %v", dc, h.n, h.err, string(h.sum[:]) == string(want))
		}
	}
	if n := r.mb.c.branchesRemoved.Load(); n != 0 {
		t.Errorf("%d branches removed during a clean transfer", n)
	}
}

// TestForkNSAckGating: when one DC's receiver stops reading, the client's
// acknowledged bytes stop advancing within that receiver's window (and the
// fast DC is held back too: the client may not send past the slow DC's
// window); when it reads again the transfer completes everywhere.
func TestForkNSAckGating(t *testing.T) {
	r := newForkRig(t, testbed.Config{DCs: forkDCs(2)}, ackmerge.Config{BranchTimeout: time.Minute})
	const (
		size    = 32 << 20
		before  = 1 << 20   // the slow DC reads this much, then stops
		rcvbuf  = 128 << 10 // its SO_RCVBUF (the kernel doubles it)
		slack   = 64 << 10  // rounding of windows to the MSS and scale
		windowB = 2*rcvbuf + slack
	)
	results := make(chan hashResult, 2)
	var fastRead, slowRead atomic.Int64
	resume := make(chan struct{})
	r.listen(t, "dc1", 0, hashingServer("dc1", results, &fastRead))
	r.listen(t, "dc2", rcvbuf, func(c net.Conn) {
		h := sha256.New()
		n1, err := io.CopyN(h, countingReader{c, &slowRead}, before)
		if err == nil {
			select {
			case <-resume:
			case <-t.Context().Done(): // the test ended early
				return
			}
			var n2 int64
			n2, err = io.Copy(h, countingReader{c, &slowRead})
			n1 += n2
		}
		res := hashResult{dc: "dc2", n: n1, err: err}
		copy(res.sum[:], h.Sum(nil))
		results <- res
		if err == nil {
			c.Write(res.sum[:])
		}
	})
	c := r.dial(t)
	up := sha256.New()
	werr := make(chan error, 1)
	go func() { werr <- upload(c, 7, size, up) }()

	// Wait until the client's acknowledged bytes stop moving for 300 ms.
	var last int64 = -1
	var since time.Time
	testenv.WaitFor(t, 20*time.Second, "the client's acknowledged bytes to stall", func() bool {
		a := forkAcked(t, c)
		if a != last {
			last, since = a, time.Now()
			return false
		}
		return time.Since(since) >= 300*time.Millisecond && slowRead.Load() >= before
	})
	acked, slow, fast := forkAcked(t, c), slowRead.Load(), fastRead.Load()
	t.Logf("stalled: client acked %d, slow DC read %d, fast DC read %d", acked, slow, fast)
	if acked != last {
		t.Fatalf("acked moved from %d to %d after the stall", last, acked)
	}
	if acked >= size {
		t.Fatalf("client acked all %d bytes while a DC stopped reading", acked)
	}
	if acked < slow {
		t.Errorf("client acked %d < %d the slow DC read", acked, slow)
	}
	if acked-slow > windowB {
		t.Errorf("client acked %d bytes beyond what the slow DC read (bound: its window, %d)", acked-slow, windowB)
	}
	if fast-slow > windowB+int64(4<<20) {
		// The client may not send past the slow DC's right edge; what the
		// fast DC reads is bounded by that edge (plus the client's unacked
		// flight, also within it).
		t.Errorf("fast DC read %d bytes beyond the slow DC (window %d)", fast-slow, windowB)
	}
	close(resume)
	select {
	case err := <-werr:
		if err != nil {
			t.Fatalf("upload after resume: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("upload did not finish after resume: client acked %d", forkAcked(t, c))
	}
	got := make([]byte, 32)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	want := up.Sum(nil)
	if string(got) != string(want) {
		t.Fatal("answer differs from the upload's hash")
	}
	for dc, h := range collect(t, results, 2, 30*time.Second) {
		if h.err != nil || h.n != size || string(h.sum[:]) != string(want) {
			t.Errorf("%s: %d bytes, err %v, hash match %v", dc, h.n, h.err, string(h.sum[:]) == string(want))
		}
	}
}

// TestForkNSRedisBenchmark: redis-benchmark through the forked port, a
// redis-server in each of three DCs: no errors, and every DC ends with the
// same data (DEBUG DIGEST).
func TestForkNSRedisBenchmark(t *testing.T) {
	testenv.RequireCommand(t, "redis-server", "redis-cli", "redis-benchmark")
	r := newForkRig(t, testbed.Config{DCs: forkDCs(3)}, ackmerge.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dcs := []string{"dc1", "dc2", "dc3"}
	for _, dc := range dcs {
		p, err := r.tb.Start(dc, []string{"redis-server", "--port", fmt.Sprint(forkNodePort), "--bind", "0.0.0.0",
			"--save", "", "--appendonly", "no", "--protected-mode", "no", "--enable-debug-command", "yes"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop(2 * time.Second) })
		if err := p.WaitOutput(ctx, "Ready to accept connections"); err != nil {
			t.Fatal(err)
		}
	}
	// Writes whose replies are identical in every DC (SET answers +OK),
	// from many connections, unpipelined and pipelined.
	for _, extra := range [][]string{
		{"-c", "20", "-n", "20000"},
		{"-c", "8", "-n", "50000", "-P", "16"},
	} {
		args := append([]string{"redis-benchmark", "-h", testbed.VIP.String(), "-p", fmt.Sprint(forkVIPPort),
			"-t", "set", "-r", "5000", "-d", "64", "--csv"}, extra...)
		out, err := r.tb.Exec(ctx, "client", args...)
		t.Logf("%v:\n%s", extra, out)
		if err != nil {
			t.Fatalf("redis-benchmark %v: %v", extra, err)
		}
		low := strings.ToLower(string(out))
		if strings.Contains(low, "error") || strings.Contains(low, "reset") || !strings.Contains(string(out), `"SET"`) {
			t.Fatalf("redis-benchmark %v reported a problem", extra)
		}
	}
	var digests, sizes []string
	for _, dc := range dcs {
		node := r.tb.NodeAddrs(dc)[0].String()
		d, err := r.tb.Exec(ctx, dc, "redis-cli", "-h", node, "-p", fmt.Sprint(forkNodePort), "DEBUG", "DIGEST")
		if err != nil {
			t.Fatalf("%s: DEBUG DIGEST: %v %s", dc, err, d)
		}
		n, err := r.tb.Exec(ctx, dc, "redis-cli", "-h", node, "-p", fmt.Sprint(forkNodePort), "DBSIZE")
		if err != nil {
			t.Fatalf("%s: DBSIZE: %v %s", dc, err, n)
		}
		digests = append(digests, strings.TrimSpace(string(d)))
		sizes = append(sizes, strings.TrimSpace(string(n)))
	}
	t.Logf("digests %v, sizes %v", digests, sizes)
	for i := range dcs {
		if digests[i] != digests[0] || sizes[i] != sizes[0] {
			t.Errorf("%s: digest %s / %s keys, %s: %s / %s keys", dcs[i], digests[i], sizes[i], dcs[0], digests[0], sizes[0])
		}
	}
	if sizes[0] == "0" {
		t.Error("no key written")
	}
	if n := r.mb.c.branchesRemoved.Load(); n != 0 {
		t.Errorf("%d branches removed", n)
	}
	if n := r.mb.c.forkResets.Load(); n != 0 {
		t.Errorf("%d forked connections reset", n)
	}
}

// TestForkNSMixedPaths: three DCs whose paths differ (dc1: no window
// scaling; dc2: MTU 1280 and a small receive buffer, so a smaller window
// scale; dc3: emulated 2 ms each way with 1% loss each way) still give a
// complete, byte-identical transfer both ways, with SACK stripped (the
// paper's choice) and with SACK kept (blocks every branch holds).
func TestForkNSMixedPaths(t *testing.T) {
	t.Run("strip-sack", func(t *testing.T) { testForkNSMixedPaths(t, ackmerge.Config{}) })
	t.Run("sack", func(t *testing.T) { testForkNSMixedPaths(t, ackmerge.Config{SACK: true}) })
}

func testForkNSMixedPaths(t *testing.T, fork ackmerge.Config) {
	dcs := forkDCs(3)
	dcs[2].Delay, dcs[2].Loss = 2*time.Millisecond, 0.01
	r := newForkRig(t, testbed.Config{DCs: dcs}, fork)
	set := func(dc string, kv ...string) {
		t.Helper()
		for i := 0; i < len(kv); i += 2 {
			if out, err := r.tb.Exec(context.Background(), dc, "sysctl", "-q", "-w", kv[i]+"="+kv[i+1]); err != nil {
				t.Fatalf("%s: sysctl %s: %v %s", dc, kv[i], err, out)
			}
		}
	}
	set("dc1", "net.ipv4.tcp_window_scaling", "0")
	set("dc2", "net.ipv4.tcp_rmem", "4096 65536 524288")
	for _, ns := range []string{"dc2", "gw"} {
		ifn := "gw0"
		if ns == "gw" {
			ifn = "dc2"
		}
		if out, err := r.tb.Exec(context.Background(), ns, "ip", "link", "set", ifn, "mtu", "1280"); err != nil {
			t.Fatalf("mtu: %v %s", err, out)
		}
	}
	const up, down = 4 << 20, 1 << 20
	results := make(chan hashResult, 3)
	for _, dc := range []string{"dc1", "dc2", "dc3"} {
		serve := hashingServer(dc, results, nil)
		r.listen(t, dc, 0, func(c net.Conn) {
			serve(c) // hash of the upload, then the same download everywhere
			io.Copy(c, io.LimitReader(newForkStream(99), down))
		})
	}
	c := r.dial(t)
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		// The client's MSS is the minimum over the branches: dc2's.
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Errorf("TCP_INFO: %v", err)
		} else if ti.Snd_mss > 1240 {
			t.Errorf("client MSS %d, want <= 1240 (dc2's MTU 1280)", ti.Snd_mss)
		}
	})
	h := sha256.New()
	werr := make(chan error, 1)
	go func() { werr <- upload(c, 11, up, h) }()
	got := make([]byte, 32)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("upload: %v", err)
	}
	want := h.Sum(nil)
	if string(got) != string(want) {
		t.Fatal("answer differs from the upload's hash")
	}
	dh := sha256.New()
	n, err := io.Copy(dh, c)
	ref := sha256.New()
	io.Copy(ref, io.LimitReader(newForkStream(99), down))
	if err != nil || n != down || string(dh.Sum(nil)) != string(ref.Sum(nil)) {
		t.Fatalf("download: %d of %d bytes, %v, hash match %v", n, down, err, string(dh.Sum(nil)) == string(ref.Sum(nil)))
	}
	for dc, res := range collect(t, results, 3, 30*time.Second) {
		if res.err != nil || res.n != up || string(res.sum[:]) != string(want) {
			t.Errorf("%s: %d bytes, err %v, hash match %v", dc, res.n, res.err, string(res.sum[:]) == string(want))
		}
	}
	for _, l := range r.tb.Links() {
		if l.ToDC != nil {
			t.Logf("%s: lost %d packets to the DC, %d from it", l.DC, l.ToDC.DropLoss, l.FromDC.DropLoss)
		}
	}
	if n := r.mb.c.branchesRemoved.Load(); n != 0 {
		t.Errorf("%d branches removed", n)
	}
}

// TestForkNSCutOneDC: cutting one DC in the middle of an upload; the
// connection goes on with the other two without a reset once the cut
// branch times out. With min-replicas 3 the client is reset instead.
func TestForkNSCutOneDC(t *testing.T) {
	const (
		first = 8 << 20
		size  = 32 << 20
	)
	run := func(t *testing.T, minReplicas int) (c *net.TCPConn, r *forkRig, results chan hashResult, h hash.Hash, werr chan error) {
		r = newForkRig(t, testbed.Config{DCs: forkDCs(3)}, ackmerge.Config{MinReplicas: minReplicas, BranchTimeout: time.Second})
		results = make(chan hashResult, 3)
		for _, dc := range []string{"dc1", "dc2", "dc3"} {
			r.listen(t, dc, 0, hashingServer(dc, results, nil))
		}
		c = r.dial(t)
		h = sha256.New()
		src := io.TeeReader(io.LimitReader(newForkStream(5), size), h)
		if _, err := io.CopyN(c, src, first); err != nil {
			t.Fatalf("first part: %v", err)
		}
		testenv.WaitFor(t, 20*time.Second, "the first part to be acknowledged by every DC", func() bool {
			return forkAcked(t, c) >= first
		})
		if err := r.tb.Cut("dc3"); err != nil {
			t.Fatal(err)
		}
		werr = make(chan error, 1)
		go func() {
			_, err := io.Copy(c, src)
			if err == nil {
				err = c.CloseWrite()
			}
			werr <- err
		}()
		return
	}

	t.Run("continues", func(t *testing.T) {
		c, r, results, h, werr := run(t, 1)
		got := make([]byte, 32)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("read answer after the cut: %v", err)
		}
		if err := <-werr; err != nil {
			t.Fatalf("upload after the cut: %v", err)
		}
		want := h.Sum(nil)
		if string(got) != string(want) {
			t.Fatal("answer differs from the upload's hash")
		}
		if n, err := c.Read(got); n != 0 || err != io.EOF {
			t.Fatalf("after the answer: %d bytes, %v; want EOF without a reset", n, err)
		}
		res := collect(t, results, 2, 30*time.Second)
		for _, dc := range []string{"dc1", "dc2"} {
			if h := res[dc]; h.err != nil || h.n != size || string(h.sum[:]) != string(want) {
				t.Errorf("%s: %d bytes, err %v", dc, h.n, h.err)
			}
		}
		if _, ok := res["dc3"]; ok {
			t.Error("the cut DC finished the upload")
		}
		if n := r.mb.c.branchesRemoved.Load(); n != 1 {
			t.Errorf("branches removed: %d, want 1", n)
		}
		if n := r.mb.c.forkResets.Load(); n != 0 {
			t.Errorf("forked connections reset: %d", n)
		}
	})

	t.Run("below-min-replicas", func(t *testing.T) {
		c, _, _, _, werr := run(t, 3)
		var rerr error
		select {
		case rerr = <-werr:
		case <-time.After(30 * time.Second):
			t.Fatal("no reset within 30 s of the cut")
		}
		if rerr == nil {
			// The whole upload fit in the socket buffer: the reset shows on read.
			_, rerr = io.ReadFull(c, make([]byte, 32))
		}
		if !errors.Is(rerr, syscall.ECONNRESET) {
			t.Fatalf("after the cut with min-replicas 3: %v, want connection reset", rerr)
		}
	})
}
