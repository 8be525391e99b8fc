package failover_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The middlebox's loop: report segments and probe results as they come,
// tick periodically, and apply every decision (steer new flows to
// PreferredDC/LiveNodes, RST anycast flows on a dead node, shrink forked
// flows).
func Example() {
	topo := []failover.DC{
		{Name: "sydney", Nodes: []netip.AddrPort{netip.MustParseAddrPort("10.0.1.1:6379"), netip.MustParseAddrPort("10.0.1.2:6379")}},
		{Name: "dublin", Nodes: []netip.AddrPort{netip.MustParseAddrPort("10.0.2.1:6379")}},
	}
	d, err := failover.New[uint64](failover.Config{Mode: failover.Fast}, topo)
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	apply := func(ds []failover.Decision) {
		for _, dec := range ds {
			fmt.Printf("%v (%v): %s\n", dec.Kind, dec.Signal, dec.Cause)
		}
	}

	// A client flow (key 1) to node 0, answered.
	apply(d.ClientSegment(now, 1, 0, failover.Segment{Seq: 100, Len: 20, Flags: header.TCPFlagAck}))
	apply(d.ServerSegment(now.Add(10*time.Millisecond), 1, 0, failover.Segment{Ack: 120, Flags: header.TCPFlagAck}))

	// Sydney is cut: every probe of its nodes times out.
	for i := 1; i <= 2; i++ {
		at := now.Add(time.Duration(i) * 100 * time.Millisecond)
		apply(d.Probe(at, 0, failover.ProbeResult{}))
		apply(d.Probe(at, 1, failover.ProbeResult{}))
	}
	dc, _ := d.PreferredDC()
	s, _ := d.DCState(dc)
	fmt.Println("preferred:", s.Name)
	// Output:
	// NodeDown (dc_probes): node 10.0.1.1:6379: all 2 live nodes of DC sydney missed 2+ probes
	// NodeDown (dc_probes): node 10.0.1.2:6379: all 2 live nodes of DC sydney missed 2+ probes
	// DCDown (nodes): no live node (last node 10.0.1.2:6379: all 2 live nodes of DC sydney missed 2+ probes)
	// preferred: dublin
}
