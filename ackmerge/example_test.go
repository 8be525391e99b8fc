package ackmerge_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// This is how a driver (the middlebox) uses a Flow: one per forked
// connection, created on the client's SYN; every packet of the connection
// goes through Step with the side it came from; Tick runs periodically;
// the packets in Out are written back to the device, events update metrics
// and the flow table.
func Example() {
	const offset = virtio.HdrLen // the driver's Device offset
	client := netip.MustParseAddrPort("10.0.0.1:40000")
	vip := netip.MustParseAddrPort("10.200.100.1:6379")
	branches := []ackmerge.Target{
		{Addr: netip.MustParseAddrPort("10.210.1.11:6379"), DC: 0}, // sydney
		{Addr: netip.MustParseAddrPort("10.210.2.11:6379"), DC: 1}, // dublin
	}
	f, err := ackmerge.NewFlow(ackmerge.Config{MinReplicas: 1}, client, vip, branches)
	if err != nil {
		panic(err)
	}

	// A reusable batch; Alloc hands out pooled buffers for extra copies.
	out := &ackmerge.Out{Offset: offset, Alloc: func(n int) []byte { return make([]byte, n) }}

	// The client's SYN as read from the device: vnet header, then packet.
	buf := make([]byte, offset+40)
	syn := buf[offset:]
	syn[0], syn[3], syn[9] = 0x45, 40, packet.ProtoTCP
	copy(syn[12:], []byte{10, 0, 0, 1, 10, 200, 100, 1})
	syn[20], syn[21], syn[22], syn[23] = 40000>>8, 40000&0xff, 6379>>8, 6379&0xff
	syn[32], syn[33] = 5<<4, packet.FlagSYN
	var p packet.TCP
	if err := p.Parse(syn, virtio.At(buf, offset)); err != nil {
		panic(err)
	}
	p.ComputeIPChecksum()
	p.ComputeTCPChecksum()

	out.Reset()
	f.Step(buf, &p, ackmerge.ToClient, time.Now(), out)
	for _, e := range out.Pkts {
		// dev.Write([][]byte{e.Buf}, offset) in the real driver.
		var q packet.TCP
		q.Parse(e.Buf[offset:], virtio.At(e.Buf, offset))
		fmt.Println("to branch", e.To, "dst", q.DstAddr(), "in place:", e.InPlace)
	}
	fmt.Println("state:", f.State())
	// Output:
	// to branch 0 dst 10.210.1.11 in place: false
	// to branch 1 dst 10.210.2.11 in place: true
	// state: syn-sent
}
