package netstackio

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// topo is a three-namespace line, client --veth-- gw --veth-- server, with
// policy routing in gw that sends client<->server traffic into a TUN when
// a route exists in table 100 (while a TUN is attached), and plain kernel
// forwarding otherwise.
//
//	client 10.77.1.1 ── vc 10.77.1.254 [gw: tun] 10.77.2.254 vs ── 10.77.2.1 server
type topo struct {
	client, gw, server string // namespace names
}

const (
	topoClientIP = "10.77.1.1"
	topoServerIP = "10.77.2.1"
	topoTable    = "100"
)

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newTopo(t testing.TB) *topo {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	var sfx [4]byte
	rand.Read(sfx[:])
	id := hex.EncodeToString(sfx[:])
	tp := &topo{client: "nsioc-" + id, gw: "nsiog-" + id, server: "nsios-" + id}
	for _, ns := range []string{tp.client, tp.gw, tp.server} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	g, c, s := tp.gw, tp.client, tp.server
	run(t, "ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	run(t, "ip", "-n", g, "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", c)
	run(t, "ip", "-n", g, "link", "add", "vs", "type", "veth", "peer", "name", "eth0", "netns", s)
	run(t, "ip", "-n", g, "addr", "add", "10.77.1.254/24", "dev", "vc")
	run(t, "ip", "-n", g, "addr", "add", "10.77.2.254/24", "dev", "vs")
	run(t, "ip", "-n", c, "addr", "add", topoClientIP+"/24", "dev", "eth0")
	run(t, "ip", "-n", s, "addr", "add", topoServerIP+"/24", "dev", "eth0")
	for _, l := range [][2]string{{g, "vc"}, {g, "vs"}, {g, "lo"}, {c, "eth0"}, {c, "lo"}, {s, "eth0"}, {s, "lo"}} {
		run(t, "ip", "-n", l[0], "link", "set", l[1], "up")
	}
	run(t, "ip", "-n", c, "route", "add", "default", "via", "10.77.1.254")
	run(t, "ip", "-n", s, "route", "add", "default", "via", "10.77.2.254")
	run(t, "ip", "-n", g, "rule", "add", "iif", "vc", "lookup", topoTable)
	run(t, "ip", "-n", g, "rule", "add", "iif", "vs", "lookup", topoTable)
	return tp
}

func nsPath(ns string) string { return "/run/netns/" + ns }

// forwarder reads packets from a TUN and writes them back unchanged.
type forwarder struct {
	dev        Device
	done       chan struct{}
	reads      atomic.Uint64 // packets read
	readBytes  atomic.Uint64 // bytes read (IP packets, headers included)
	superReads atomic.Uint64 // packets read larger than the MTU
	err        error
}

// attachTUN opens a TUN of the given mode in the gw namespace, routes table
// 100 into it and starts a forwarder. Closing the device (cleanup) removes
// the route with it.
func (tp *topo) attachTUN(t testing.TB, mode TUNMode) *forwarder {
	t.Helper()
	name := "tun" + strconv.Itoa(int(mrand.Uint32()%10000))
	var dev Device
	if err := InNetns(nsPath(tp.gw), func() (err error) {
		dev, err = OpenTUN(name, TUNOptions{Mode: mode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f := &forwarder{dev: dev, done: make(chan struct{})}
	t.Cleanup(func() {
		dev.Close()
		<-f.done
		if f.err != nil {
			t.Errorf("forwarder: %v", f.err)
		}
	})
	run(t, "ip", "-n", tp.gw, "route", "add", "default", "dev", name, "table", topoTable)
	go f.run()
	return f
}

func (f *forwarder) run() {
	defer close(f.done)
	const off = virtio.HdrLen
	batch := f.dev.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, off+MaxPacket)
	}
	sizes := make([]int, batch)
	wb := make([][]byte, batch)
	mtu := f.dev.MTU()
	for {
		n, err := f.dev.Read(bufs, sizes, off)
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				f.err = err
			}
			return
		}
		for i := 0; i < n; i++ {
			if sizes[i] > mtu {
				f.superReads.Add(1)
			}
			wb[i] = bufs[i][:off+sizes[i]]
			f.readBytes.Add(uint64(sizes[i]))
		}
		f.reads.Add(uint64(n))
		if _, err := f.dev.Write(wb[:n], off); err != nil {
			if !errors.Is(err, ErrClosed) {
				f.err = err
			}
			return
		}
	}
}

// transfer sends size pseudo-random bytes by kernel TCP from the client to
// the server namespace and checks they arrive intact (sha256).
func (tp *topo) transfer(t *testing.T, size int) {
	t.Helper()
	var ln net.Listener
	if err := InNetns(nsPath(tp.server), func() (err error) {
		ln, err = net.Listen("tcp", topoServerIP+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	resc := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(90 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		resc <- r
	}()
	var conn net.Conn
	if err := InNetns(nsPath(tp.client), func() (err error) {
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(90 * time.Second))
	rng := mrand.NewChaCha8([32]byte{1, 2, 3})
	want := sha256.New()
	buf := make([]byte, 256<<10)
	for sent := 0; sent < size; sent += len(buf) {
		rng.Read(buf)
		want.Write(buf)
		if _, err := conn.Write(buf); err != nil {
			t.Fatalf("client write after %d bytes: %v", sent, err)
		}
	}
	conn.Close()
	r := <-resc
	if r.err != nil {
		t.Fatalf("server read: %v", r.err)
	}
	if r.n != int64(size) || !bytes.Equal(r.sum[:], want.Sum(nil)) {
		t.Fatalf("server got %d bytes, sha256 %x; want %d bytes, %x", r.n, r.sum, size, want.Sum(nil))
	}
}

func TestTUNForwardsKernelTCP(t *testing.T) {
	tp := newTopo(t)
	for _, mode := range []TUNMode{ModeOffload, ModePlain} {
		t.Run(mode.String(), func(t *testing.T) {
			f := tp.attachTUN(t, mode)
			dev := f.dev
			if dev.Offload() != (mode == ModeOffload) || dev.MTU() != 1500 {
				t.Fatalf("Offload()=%v MTU()=%d", dev.Offload(), dev.MTU())
			}
			// The TUN is up, and IPv6 is off on it.
			if v := strings.TrimSpace(run(t, "ip", "netns", "exec", tp.gw, "cat",
				"/proc/sys/net/ipv6/conf/"+dev.Name()+"/disable_ipv6")); v != "1" {
				t.Fatalf("disable_ipv6 on %s = %q", dev.Name(), v)
			}
			if out := run(t, "ip", "-n", tp.gw, "link", "show", dev.Name()); !strings.Contains(out, ",UP") || !strings.Contains(out, "mtu 1500") {
				t.Fatalf("link not up with mtu 1500: %s", out)
			}
			tp.transfer(t, 64<<20)
			st := dev.(StatsReporter).Stats()
			t.Logf("%s: reads %d (super-packets > MTU: %d), stats %+v", mode, f.reads.Load(), f.superReads.Load(), st)
			// The data went through the TUN, not around it.
			if f.readBytes.Load() < 64<<20 {
				t.Fatalf("only %d bytes crossed the TUN", f.readBytes.Load())
			}
			if mode == ModeOffload {
				if f.superReads.Load() == 0 || st.RxGSO == 0 {
					t.Fatalf("offload mode read no GSO super-packet (> MTU): %+v", st)
				}
			} else if f.superReads.Load() != 0 {
				t.Fatalf("plain mode read %d packets larger than the MTU", f.superReads.Load())
			}
			if st.Invalid != 0 {
				t.Fatalf("kernel refused %d packets", st.Invalid)
			}
		})
	}
}

func TestTUNCloseUnblocksRead(t *testing.T) {
	tp := newTopo(t)
	for _, mode := range []TUNMode{ModeOffload, ModePlain} {
		var dev Device
		if err := InNetns(nsPath(tp.gw), func() (err error) {
			dev, err = OpenTUN("tunclose", TUNOptions{Mode: mode, MTU: 1400})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			bufs := [][]byte{make([]byte, virtio.HdrLen+MaxPacket)}
			_, err := dev.Read(bufs, make([]int, 1), virtio.HdrLen)
			errc <- err
		}()
		dev.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("%v: Read after Close: %v", mode, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: Close did not unblock Read", mode)
		}
		if _, err := dev.Write([][]byte{make([]byte, virtio.HdrLen+40)}, virtio.HdrLen); !errors.Is(err, ErrClosed) {
			t.Fatalf("%v: Write after Close: %v", mode, err)
		}
		// The interface is gone with the device.
		testenv.WaitFor(t, 10*time.Second, "TUN removed", func() bool {
			return exec.Command("ip", "-n", tp.gw, "link", "show", "tunclose").Run() != nil
		})
	}
}

// TestTUNHotPathAllocatesNothing sends UDP through the TUN both ways: a
// packet Written into the TUN reaches a socket in gw, whose answer is
// routed back into the TUN and Read. Neither direction may allocate.
func TestTUNHotPathAllocatesNothing(t *testing.T) {
	tp := newTopo(t)
	for _, mode := range []TUNMode{ModeOffload, ModePlain} {
		t.Run(mode.String(), func(t *testing.T) {
			var dev Device
			var sock *net.UDPConn
			name := "tunalloc" + strconv.Itoa(int(mode))
			if err := InNetns(nsPath(tp.gw), func() (err error) {
				if dev, err = OpenTUN(name, TUNOptions{Mode: mode}); err != nil {
					return err
				}
				sock, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.77.1.254:7000")))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			defer sock.Close()
			run(t, "ip", "-n", tp.gw, "route", "add", "10.99.0.0/24", "dev", name)
			const off = virtio.HdrLen
			peer := netip.MustParseAddrPort("10.99.0.5:7001")
			pkt := udp4Packet(peer, netip.MustParseAddrPort("10.77.1.254:7000"), []byte("ping through the tun"))
			out := [][]byte{append(make([]byte, off), pkt...)}
			in := [][]byte{make([]byte, off+MaxPacket)}
			sizes := make([]int, 1)
			sbuf := make([]byte, 2048)
			reply := []byte("pong")
			sock.SetDeadline(time.Now().Add(30 * time.Second))
			step := func() {
				if n, err := dev.Write(out, off); n != 1 || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
				n, from, err := sock.ReadFromUDPAddrPort(sbuf)
				if err != nil || n != len(pkt)-28 || from != peer {
					t.Fatalf("socket got %d bytes from %v: %v", n, from, err)
				}
				if _, err := sock.WriteToUDPAddrPort(reply, from); err != nil {
					t.Fatal(err)
				}
				if n, err := dev.Read(in, sizes, off); n != 1 || err != nil {
					t.Fatalf("Read = %d, %v", n, err)
				}
				if got := in[0][off : off+sizes[0]]; len(got) != 28+len(reply) || got[9] != 17 {
					t.Fatalf("read back %x, want the UDP reply", got)
				}
			}
			step()
			if a := testing.AllocsPerRun(200, step); a != 0 {
				t.Fatalf("%v allocations per Write+Read, want 0", a)
			}

			// A packet whose virtio-net header cannot be honoured is dropped
			// and counted, Write reports no error, and the device goes on.
			bad := append([]byte(nil), out[0]...)
			h := virtio.At(bad, off)
			h.SetFlags(virtio.FlagNeedsCsum)
			h.SetCsumStart(uint16(len(pkt) + 100))
			h.SetCsumOffset(6)
			before := dev.(StatsReporter).Stats().Invalid
			if n, err := dev.Write([][]byte{bad}, off); n != 1 || err != nil {
				t.Fatalf("Write(bad) = %d, %v", n, err)
			}
			if got := dev.(StatsReporter).Stats().Invalid; got != before+1 {
				t.Fatalf("Invalid = %d after a bad header, want %d", got, before+1)
			}
			step()
		})
	}
}

// udp4Packet builds an IPv4 UDP packet (UDP checksum 0: none).
func udp4Packet(src, dst netip.AddrPort, payload []byte) []byte {
	pkt := make([]byte, 28+len(payload))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(src.Addr().As4()),
		DstAddr:     tcpip.AddrFrom4(dst.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(pkt[20:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(8 + len(payload))})
	copy(pkt[28:], payload)
	return pkt
}

func TestOpenTUNRejectsBadOptions(t *testing.T) {
	if _, err := OpenTUN("", TUNOptions{}); err == nil {
		t.Error("empty name accepted")
	}
	if _, err := OpenTUN("x", TUNOptions{MTU: 100}); err == nil {
		t.Error("MTU 100 accepted")
	}
	if _, err := OpenTUN("x", TUNOptions{Mode: 9}); err == nil {
		t.Error("unknown mode accepted")
	}
}

// iperf3 runs a single-stream iperf3 test from the client to the server
// namespace and returns the received Gbit/s.
func (tp *topo) iperf3(b testing.TB, seconds int) float64 {
	b.Helper()
	port := strconv.Itoa(20000 + int(mrand.Uint32()%20000))
	srv := exec.Command("ip", "netns", "exec", tp.server, "iperf3", "-s", "-B", topoServerIP, "-p", port)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	testenv.WaitFor(b, 10*time.Second, "iperf3 server listening", func() bool {
		out, _ := exec.Command("ip", "netns", "exec", tp.server, "ss", "-Hltn", "sport", "=", ":"+port).Output()
		return len(bytes.TrimSpace(out)) > 0
	})
	out := run(b, "ip", "netns", "exec", tp.client, "iperf3", "-c", topoServerIP, "-p", port,
		"-t", strconv.Itoa(seconds), "-J")
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		b.Fatalf("iperf3 JSON: %v", err)
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		b.Fatalf("iperf3 measured nothing: %s", out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}

// BenchmarkTUNForwardIperf3 measures single-stream kernel TCP throughput
// (iperf3) across the gw namespace three ways in the same run: kernel
// forwarding (baseline), through an offload TUN forwarder, and through a
// plain TUN forwarder, and reports Gbit/s and the ratios to the baseline.
// Run with: go test -run '^$' -bench TUNForward -benchtime 1x ./netstackio/
// (root). NETSTACKIO_IPERF_SECONDS sets each run's length (default 5).
func BenchmarkTUNForwardIperf3(b *testing.B) {
	testenv.RequireCommand(b, "iperf3", "ss")
	tp := newTopo(b)
	secs := 5
	if v, err := strconv.Atoi(os.Getenv("NETSTACKIO_IPERF_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	var kernel, offload, plain float64
	for i := 0; i < b.N; i++ {
		kernel += tp.iperf3(b, secs)
		for _, m := range []TUNMode{ModeOffload, ModePlain} {
			// A sub-test scope so the TUN is closed before the next mode.
			func() {
				cb := &cleanupTB{TB: b}
				f := tp.attachTUN(cb, m)
				g := tp.iperf3(b, secs)
				if m == ModeOffload {
					offload += g
				} else {
					plain += g
				}
				b.Logf("%s: %.2f Gbit/s, %d reads (%d > MTU), %+v", m, g, f.reads.Load(), f.superReads.Load(), f.dev.(StatsReporter).Stats())
				cb.run()
			}()
		}
	}
	n := float64(b.N)
	b.ReportMetric(kernel/n, "kernel-Gbit/s")
	b.ReportMetric(offload/n, "offload-Gbit/s")
	b.ReportMetric(plain/n, "plain-Gbit/s")
	b.ReportMetric(offload/kernel, "offload/kernel")
	b.ReportMetric(plain/kernel, "plain/kernel")
	b.ReportMetric(offload/plain, "offload/plain")
	fmt.Fprintf(os.Stderr, "iperf3 single stream, %ds: kernel %.2f, offload TUN %.2f (%.2fx), plain TUN %.2f (%.2fx) Gbit/s\n",
		secs, kernel/n, offload/n, offload/kernel, plain/n, plain/kernel)
}

// cleanupTB runs Cleanup functions when run is called instead of at the
// end of the benchmark, so one TUN is gone before the next is attached.
type cleanupTB struct {
	testing.TB
	fns []func()
}

func (c *cleanupTB) Cleanup(f func()) { c.fns = append(c.fns, f) }

func (c *cleanupTB) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}
