package kvs

// Catch-up, source side: what limited a served stream. Each stream (start
// to tail) is measured with the kernel's TCP_INFO counters: the time it
// had data in flight (busy), and of that the time the driver's receive
// window or this node's socket send buffer held it back. Over a long fat
// WAN (100 Mbit/s, 350 ms round trip) the kernel's default send buffer
// maximum (net.ipv4.tcp_wmem, 4 MiB) holds less than the data in flight
// at the catch-up rate, so the stream runs below --catchup-rate; the log
// line says which buffer to raise (docs/design-lifecycle.md, "On the
// WAN"). Counted in sdnkvs_kvs_catchup_served_*_seconds_total.

import (
	"net"
	"time"
)

// streamTCP is a TCP_INFO sample (times in microseconds).
type streamTCP struct {
	ok                       bool
	tail                     bool // the stream reached its tail (reported at the next request or the close)
	busyUs, rwndUs, sndbufUs uint64
	retrans, acked, rttUs    uint64
}

// limitedShare is the share of busy time above which a log line warns.
const limitedShare = 0.10

// endServedStream reports the stream that started at *s (if any) and
// clears it.
func (n *Node) endServedStream(c net.Conn, s *streamTCP) {
	if !s.ok {
		return
	}
	start := *s
	*s = streamTCP{}
	now := tcpSample(c)
	if !now.ok {
		return
	}
	d := func(a, b uint64) uint64 { return a - min(a, b) }
	busy, rwnd, sndbuf := d(now.busyUs, start.busyUs), d(now.rwndUs, start.rwndUs), d(now.sndbufUs, start.sndbufUs)
	retrans := d(now.retrans, start.retrans)
	st := &n.catchStats
	st.ServedStreams.Add(1)
	st.ServedBusyUs.Add(busy)
	st.ServedRwndUs.Add(rwnd)
	st.ServedSndbufUs.Add(sndbuf)
	st.ServedRetrans.Add(retrans)
	share := func(x uint64) float64 {
		if busy == 0 {
			return 0
		}
		return float64(x) / float64(busy)
	}
	us := func(x uint64) time.Duration { return time.Duration(x) * time.Microsecond }
	args := []any{"peer", c.RemoteAddr(), "bytes", d(now.acked, start.acked), "busy", us(busy),
		"rwnd_limited", us(rwnd), "sndbuf_limited", us(sndbuf), "retransmits", retrans, "rtt", us(now.rttUs), "tail", start.tail}
	switch {
	case share(sndbuf) > limitedShare:
		n.log.Warn("catch-up stream served; this node's socket send buffer held it back: raise the maximum of net.ipv4.tcp_wmem (docs/design-lifecycle.md, \"On the WAN\")", args...)
	case share(rwnd) > limitedShare:
		n.log.Warn("catch-up stream served; the driver's receive window held it back: raise the maximum of net.ipv4.tcp_rmem on the joining DC's nodes (docs/design-lifecycle.md, \"On the WAN\")", args...)
	default:
		n.log.Info("catch-up stream served", args...)
	}
}
