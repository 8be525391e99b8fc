package middlebox

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// BenchmarkLifecycleCost measures what the DC lifecycle adds to the
// middlebox's two paths it touches, each against a baseline measured in
// the same run without it (Config.Lifecycle nil), the failure detector on
// in both (probes off):
//
//   - syn: a client SYN that creates a forked flow (newFlow: refusal check,
//     DC choice, flows lacking a DC), ns per SYN;
//   - pass: one timer pass over 4096 forked flows (ackmerge timers, lag
//     reports to the detector, the lifecycle's tick), ns per flow.
//
// Reported: ns per SYN or per flow with and without (base-) the
// lifecycle, and "x-baseline", their ratio.
func BenchmarkLifecycleCost(b *testing.B) {
	mk := func(b *testing.B, life bool) *Middlebox {
		cfg := testConfig()
		cfg.AnycastPorts = nil
		cfg.MulticastPorts = []uint16{6379}
		cfg.MaxFlows = 1 << 20
		cfg.MaxHalfOpenPerSource = 1 << 20
		clk := time.Unix(1000, 0)
		cfg.Now = func() time.Time { return clk }
		det := failover.DefaultConfig()
		cfg.Failover = &FailoverConfig{Detector: det, Probe: prober.None}
		if life {
			cfg.Lifecycle = &LifecycleConfig{LifecycleConfig: failover.LifecycleConfig{Mode: failover.RejoinManual}}
		}
		m, err := New(newFakeDev(false, false), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		m.log = slog.New(slog.DiscardHandler)
		return m
	}
	syn := func(m *Middlebox, i int) {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, byte(1 + i>>16), byte(i >> 8)}), uint16(1024+i&0xff))
		feed(m, nil, mkTCP(tcpSpec{src: src, dst: netip.AddrPortFrom(testVIP, 6379), flags: header.TCPFlagSyn, seq: 100}))
	}
	// Interleaved: the baseline and the lifecycle middlebox take turns,
	// chunk by chunk, so that the load of a shared machine hits both.
	const chunk = 4096
	b.Run("syn", func(b *testing.B) {
		ms := [2]*Middlebox{mk(b, false), mk(b, true)}
		var el [2]time.Duration
		for done := 0; done < b.N; done += chunk {
			for k, m := range ms {
				start := time.Now()
				for i := range chunk {
					syn(m, i)
				}
				el[k] += time.Since(start)
				m.Expire(time.Unix(1000, 0).Add(time.Hour)) // empty the table, untimed
			}
		}
		n := float64((b.N + chunk - 1) / chunk * chunk)
		b.ReportMetric(float64(el[1].Nanoseconds())/n, "ns/syn")
		b.ReportMetric(float64(el[0].Nanoseconds())/n, "base-ns/syn")
		b.ReportMetric(float64(el[1])/float64(el[0]), "x-baseline")
	})
	b.Run("pass", func(b *testing.B) {
		ms := [2]*Middlebox{mk(b, false), mk(b, true)}
		for _, m := range ms {
			for i := range chunk {
				syn(m, i)
			}
		}
		var el [2]time.Duration
		now := time.Unix(1000, 0)
		for range b.N {
			for k, m := range ms {
				start := time.Now()
				m.Expire(now)
				el[k] += time.Since(start)
			}
		}
		n := float64(b.N * chunk)
		b.ReportMetric(float64(el[1].Nanoseconds())/n, "ns/flow")
		b.ReportMetric(float64(el[0].Nanoseconds())/n, "base-ns/flow")
		b.ReportMetric(float64(el[1])/float64(el[0]), "x-baseline")
	})
}
