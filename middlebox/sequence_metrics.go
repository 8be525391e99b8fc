package middlebox

import "github.com/prometheus/client_golang/prometheus"

// seqCollector exports the sequencer's counters and the order streams'
// state at scrape time.
type seqCollector struct {
	m                                    *Middlebox
	stamped, refused, persistErrs, lastG *prometheus.Desc
	queued, dropped, up, ups, errs       *prometheus.Desc
	applied, dcApplied                   *prometheus.Desc
}

func newSeqCollector(m *Middlebox) *seqCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sdnkvs_middlebox_sequencer_"+name, help, labels, nil)
	}
	return &seqCollector{
		m:           m,
		stamped:     d("segments_stamped_total", "Client segments of sequenced flows that got a new stamp."),
		refused:     d("segments_refused_total", "Client segments dropped because no stamp could be given (ceiling not persisted, too many unacknowledged ranges)."),
		persistErrs: d("ceiling_persist_errors_total", "Failed writes of the clock's reserved ceiling."),
		lastG:       d("last_g", "Last position handed out."),
		queued:      d("order_frames_queued_total", "Order-stream frames queued, per node.", "dc", "node"),
		dropped:     d("order_frames_dropped_total", "Order-stream frames dropped by a queue overflow (the stream is then reconnected and resynced), per node.", "dc", "node"),
		up:          d("order_up", "1 if the node's order stream is connected.", "dc", "node"),
		ups:         d("order_connects_total", "Order-stream connections established, per node.", "dc", "node"),
		errs:        d("order_errors_total", "Order-stream connection failures, per node.", "dc", "node"),
		applied:     d("node_applied_g", "Highest position the node reported applied.", "dc", "node"),
		dcApplied:   d("dc_applied_g", "Highest position any node of the DC reported applied.", "dc"),
	}
}

func (c *seqCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.stamped, c.refused, c.persistErrs, c.lastG, c.queued, c.dropped, c.up, c.ups, c.errs, c.applied, c.dcApplied} {
		ch <- d
	}
}

func (c *seqCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	s := m.seq
	cnt := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	info, _ := m.Sequencer()
	cnt(c.stamped, info.Stamped)
	cnt(c.refused, info.Refused)
	cnt(c.persistErrs, s.persistErrs.Load())
	gauge(c.lastG, float64(info.LastG))
	for i, n := range m.nodes {
		o := s.conns[i]
		dc, addr := m.dcs[n.dc].Name, n.ap.String()
		cnt(c.queued, o.queued.Load(), dc, addr)
		cnt(c.dropped, o.dropped.Load(), dc, addr)
		up := 0.0
		if o.up.Load() {
			up = 1
		}
		gauge(c.up, up, dc, addr)
		cnt(c.ups, o.ups.Load(), dc, addr)
		cnt(c.errs, o.errs.Load(), dc, addr)
		gauge(c.applied, float64(o.applied.Load()), dc, addr)
	}
	for d, dc := range m.dcs {
		gauge(c.dcApplied, float64(m.dcAppliedG(d)), dc.Name)
	}
}
