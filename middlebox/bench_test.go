package middlebox

import (
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// BenchmarkAnycastBatch measures the data path on batches of client
// packets of an established anycast flow (parse, validate, lookup, DNAT,
// write to a discarding device), against a baseline measured in the same
// run: only loading the same packets into the batch buffers. Reported:
// ns per packet, Gbit/s of payload, and the ratio of the path's time to
// the baseline's.
func BenchmarkAnycastBatch(b *testing.B) {
	cases := []struct {
		name    string
		payload int
		offload bool
	}{
		{"mtu-full-csum", 1448, false}, // plain TUN: TCP checksum verified per packet
		{"mtu-partial-csum", 1448, true},
		{"gso-64k-partial", 65535 - 40, true}, // offload TUN super-packets
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			dev := newFakeDev(c.offload, false)
			cfg := testConfig()
			cfg.Now = func() time.Time { return time.Unix(1000, 0) }
			m, err := New(dev, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			feed(m, nil, mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagSyn, seq: 100}))
			pkt := mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck, seq: 101, ack: 1, payload: make([]byte, c.payload)})
			var vnet virtio.Hdr
			if c.offload {
				ip := header.IPv4(pkt)
				header.TCP(pkt[20:]).SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(pkt)-20)))
				vnet = make(virtio.Hdr, virtio.HdrLen)
				vnet.SetFlags(virtio.FlagNeedsCsum)
				vnet.SetCsumStart(20)
				vnet.SetCsumOffset(16)
				if c.payload > 1448 {
					vnet.SetGSOType(virtio.GSOTCPv4)
					vnet.SetGSOSize(1448)
				}
			}
			n := len(m.dp.bufs)
			load := func() {
				for i := range n {
					h := virtio.At(m.dp.bufs[i], m.offset)
					h.Clear()
					copy(h, vnet)
					m.dp.sizes[i] = copy(m.dp.bufs[i][m.offset:], pkt)
				}
			}
			// Baseline: loading the batch only.
			start := time.Now()
			for range b.N {
				load()
			}
			base := time.Since(start)
			b.ResetTimer()
			for range b.N {
				load()
				m.processBatch(n)
			}
			b.StopTimer()
			el := b.Elapsed()
			pkts := float64(b.N * n)
			b.ReportMetric(float64(el.Nanoseconds())/pkts, "ns/pkt")
			b.ReportMetric(pkts*float64(c.payload)*8/el.Seconds()/1e9, "Gbit/s")
			b.ReportMetric(float64(el)/float64(base), "x-load-baseline")
			if d := m.Stats().Drops; d["unknown_flow"]+d["bad_tcp_checksum"] != 0 {
				b.Fatalf("packets dropped: %v", d)
			}
		})
	}
}
