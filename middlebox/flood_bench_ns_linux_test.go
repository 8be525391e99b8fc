package middlebox

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// BenchmarkNetnsSYNFlood measures what a SYN flood from 4 addresses does
// to legitimate new connections through the middlebox (kernel TCP in
// namespaces, anycast port, no detector): a legitimate client opens a
// connection every 20 ms (connect and one echo, 3 s allowed: one SYN
// retransmission) for 10 s, once without a flood (the baseline, same run)
// and once while the client namespace floods the VIP with SYNs from 4
// spoofed addresses at -flood-rate. Reported: success ratio of each, the
// flood rate reached, flows held and heap bytes per flood SYN the
// middlebox took in. Run with -benchtime=1x.
func BenchmarkNetnsSYNFlood(b *testing.B) {
	testenv.RequireRoot(b)
	tb := testbedtest.ForTest(b, testbed.Config{DCs: []testbed.DC{{Name: "sydney", Nodes: 2}, {Name: "dublin", Nodes: 1}}})
	var cfg Config
	cfg.VIP = testbed.VIP
	cfg.AnycastPorts = []uint16{anyPort}
	for _, dc := range []string{"sydney", "dublin"} {
		var ln net.Listener
		if err := netstackio.InNetns(testbed.NetnsPath(tb.NS(dc)), func() error {
			var err error
			ln, err = net.Listen("tcp4", "0.0.0.0:6379")
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); io.Copy(c, c) }()
			}
		}()
	}
	m := runInGateway(b, tb, netstackio.ModeOffload, cfg, 6379)
	rate := 100000
	for range b.N {
		base := legitRun(b, tb, 10*time.Second)
		pkts := floodPackets()
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		inBefore := m.Stats().PacketsIn
		stop := make(chan struct{})
		var sent atomic.Uint64
		var wg sync.WaitGroup
		wg.Add(1)
		start := time.Now()
		go func() { defer wg.Done(); flood(b, tb, pkts, rate, stop, &sent) }()
		time.Sleep(time.Second) // the flood first, then the legitimate client
		under := legitRun(b, tb, 10*time.Second)
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		close(stop)
		wg.Wait()
		el := time.Since(start)
		s := m.Stats()
		took := s.PacketsIn - inBefore
		b.ReportMetric(base.ratio(), "baseline-success")
		b.ReportMetric(under.ratio(), "flood-success")
		b.ReportMetric(float64(sent.Load())/el.Seconds(), "flood-syn/s")
		b.ReportMetric(float64(s.FlowsActive), "flows-held")
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(took), "heap-B/syn")
		b.Logf("baseline: %s; under flood: %s; flood %d SYNs in %v (%.0f/s), middlebox took %d packets, %d flows held, drops %v",
			base, under, sent.Load(), el.Round(time.Millisecond), float64(sent.Load())/el.Seconds(), took, s.FlowsActive, nonzero(s.Drops))
	}
}

type legitResult struct {
	ok, total int
	lat       []time.Duration
}

func (r legitResult) ratio() float64 { return float64(r.ok) / float64(max(r.total, 1)) }

func (r legitResult) String() string {
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	p := func(q float64) time.Duration {
		if len(r.lat) == 0 {
			return 0
		}
		return r.lat[min(len(r.lat)-1, int(q*float64(len(r.lat))))].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("%d/%d connections (%.1f%%), p50 %v p99 %v", r.ok, r.total, 100*r.ratio(), p(0.5), p(0.99))
}

// legitRun opens a connection to the VIP every 20 ms for d, each allowed
// 3 s to connect and echo, and counts the successes.
func legitRun(b *testing.B, tb *testbed.Testbed, d time.Duration) legitResult {
	var mu sync.Mutex
	var r legitResult
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		wg.Add(1)
		r.total++
		go func() {
			defer wg.Done()
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			c, err := testbed.DialInNetns(ctx, tb.NS("client"), "tcp4", vipAny.String())
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(t0.Add(3 * time.Second))
			buf := []byte("ping")
			if _, err := c.Write(buf); err != nil {
				return
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			mu.Lock()
			r.ok++
			r.lat = append(r.lat, time.Since(t0))
			mu.Unlock()
		}()
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	return r
}

// floodPackets makes 2^18 SYNs (distinct flows: enough to fill the
// default table) to the VIP's anycast port from 4 addresses of the client
// link.
func floodPackets() [][]byte {
	pkts := make([][]byte, 1<<18)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range pkts {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, 1, byte(100 + i%4)}), uint16(1024+i/4%64000))
		pkts[i] = mkTCP(tcpSpec{src: src, dst: vipAny, flags: header.TCPFlagSyn, seq: rng.Uint32()})
	}
	return pkts
}

// flood sends pkts, over and over, from the client namespace at rate per
// second, until stop.
func flood(b *testing.B, tb *testbed.Testbed, pkts [][]byte, rate int, stop chan struct{}, sent *atomic.Uint64) {
	n := len(pkts)
	err := netstackio.InNetns(testbed.NetnsPath(tb.NS("client")), func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrInet4{Addr: testbed.VIP.As4()}
		const tick = 10 * time.Millisecond
		per := rate / int(time.Second/tick)
		next := time.Now()
		for i := 0; ; {
			select {
			case <-stop:
				return nil
			default:
			}
			for range per {
				unix.Sendto(fd, pkts[i%n], 0, to)
				i++
				sent.Add(1)
			}
			next = next.Add(tick)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
	})
	if err != nil {
		b.Error(err)
	}
}

func nonzero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
