package middlebox

import (
	"net/netip"
	"testing"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// FuzzDataPath feeds arbitrary bytes (with an arbitrary virtio-net header)
// to the data path after a flow is set up. Invariants: no panic; every
// packet is counted exactly once as forwarded, local or dropped; every
// written packet has a valid IPv4 header checksum and goes to a node, or
// back to the client from the VIP.
func FuzzDataPath(f *testing.F) {
	syn := mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagSyn, seq: 100})
	data := mkTCP(tcpSpec{src: cliAP, dst: vipAny, flags: header.TCPFlagAck | header.TCPFlagPsh, seq: 101, ack: 1, payload: []byte("hello")})
	reply := mkTCP(tcpSpec{src: syd1, dst: cliAP, flags: header.TCPFlagAck, seq: 1, ack: 106})
	f.Add(syn, []byte{})
	f.Add(data, []byte{})
	f.Add(reply, []byte{})
	f.Add(data, []byte{1, 4, 40, 0, 0x10, 0, 20, 0, 16, 0}) // NEEDS_CSUM + GSO
	f.Add(data[:30], []byte{})
	f.Add([]byte{0x45, 0, 0, 20}, []byte{})
	f.Add(make([]byte, 60), []byte{0, 0xff})
	f.Fuzz(func(t *testing.T, pkt, vnet []byte) {
		if len(pkt) > 4096 {
			pkt = pkt[:4096]
		}
		if len(vnet) > virtio.HdrLen {
			vnet = vnet[:virtio.HdrLen]
		}
		dev := newFakeDev(false, true)
		m, _ := newUnit(t, testConfig(), dev)
		feed(m, nil, syn)
		dev.take()
		before := m.Stats()
		feed(m, vnet, pkt)
		after := m.Stats()
		out := dev.take()
		var drops uint64
		for r, v := range after.Drops {
			drops += v - before.Drops[r]
		}
		local := after.Local - before.Local
		written := uint64(len(out))
		if local == 1 {
			written = 0 // the Stack may answer (RST, echo reply) asynchronously
		}
		if handled := written + local + drops; handled != 1 {
			t.Fatalf("one packet: %d written, %d local, %d dropped", len(out), after.Local-before.Local, drops)
		}
		for _, w := range out {
			p := w[virtio.HdrLen:]
			ip := header.IPv4(p)
			if len(p) < header.IPv4MinimumSize || !ip.IsChecksumValid() {
				t.Fatalf("written packet with a bad IPv4 header: % x", p[:min(len(p), 20)])
			}
			dst := netip.AddrFrom4(ip.DestinationAddress().As4())
			src := netip.AddrFrom4(ip.SourceAddress().As4())
			toNode := dst == syd1.Addr() || dst == syd2.Addr() || dst == dub1.Addr()
			if !toNode && src != testVIP {
				t.Fatalf("middlebox wrote %s -> %s: neither to a node nor from the VIP (open relay?)", src, dst)
			}
		}
	})
}
