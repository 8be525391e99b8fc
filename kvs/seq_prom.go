package kvs

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// seqCollector exports a sequenced node's SeqStats (read at scrape time, no
// second bookkeeping) as sdnkvs_kvs_seq_* metrics.
type seqCollector struct {
	s                                               *seqNode
	writes, waits, timeouts, refused, applied, wait *prometheus.Desc
	conns, bad, flows, ranges, dropped, conflicts   *prometheus.Desc
}

func newSeqCollector(s *seqNode) *seqCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("sdnkvs_kvs_seq_"+name, help, nil, nil)
	}
	return &seqCollector{s: s,
		writes:    d("writes_total", "Writes applied with a stamped tag in one round."),
		waits:     d("stamp_waits_total", "Writes whose stamp had not arrived when they were parsed."),
		timeouts:  d("stamp_timeouts_total", "Writes failed because their stamp was missing at the deadline (never applied)."),
		refused:   d("unsequenced_refused_total", "Writes refused: the connection is not a sequenced flow."),
		applied:   d("applied_g", "Highest sequencer position G of a write this node completed."),
		wait:      d("stamp_wait_seconds", "How long writes waited for their stamp."),
		conns:     d("order_conns", "Order-stream connections open."),
		bad:       d("order_bad_total", "Order connections dropped: failed handshake or corrupt frame."),
		flows:     d("flows", "Flows in the stamp table."),
		ranges:    d("ranges", "Stamp ranges held."),
		dropped:   d("dropped_total", "Flow states and stamp ranges dropped (old epoch, bounds)."),
		conflicts: d("stamp_conflicts_total", "Re-announced ranges whose G differed (ignored)."),
	}
}

func (c *seqCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.writes, c.waits, c.timeouts, c.refused, c.applied, c.wait, c.conns, c.bad, c.flows, c.ranges, c.dropped, c.conflicts} {
		ch <- d
	}
}

func (c *seqCollector) Collect(ch chan<- prometheus.Metric) {
	st := &c.s.stats
	cnt := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	cnt(c.writes, st.Writes.Load())
	cnt(c.waits, st.StampWaits.Load())
	cnt(c.timeouts, st.StampTimeouts.Load())
	cnt(c.refused, st.Refused.Load())
	gauge(c.applied, float64(st.AppliedG.Load()))
	gauge(c.conns, float64(st.OrderConns.Load()))
	cnt(c.bad, st.OrderBad.Load())
	flows, ranges := c.s.table.size()
	gauge(c.flows, float64(flows))
	gauge(c.ranges, float64(ranges))
	cnt(c.dropped, st.FlowsDropped.Load()+st.StampsDropped.Load())
	cnt(c.conflicts, st.StampConflicts.Load())
	buckets := make(map[float64]uint64, len(waitBuckets))
	var cum uint64
	for i, ub := range waitBuckets {
		cum += st.Wait.counts[i].Load()
		buckets[ub.Seconds()] = cum
	}
	total := cum + st.Wait.counts[len(waitBuckets)].Load()
	ch <- prometheus.MustNewConstHistogram(c.wait, total, float64(st.Wait.sumNs.Load())/1e9, buckets)
}

// metricsHandler serves the node's Prometheus metrics: the sequencer's in
// sequenced mode (none otherwise yet).
func (n *Node) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newSafetyCollector(n))
	reg.MustRegister(newCatchupCollector(&n.catchStats))
	if n.seq != nil {
		reg.MustRegister(newSeqCollector(n.seq))
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
