package kvs

import "github.com/prometheus/client_golang/prometheus"

// safetyCollector exports a node's safety state and counters (read at
// scrape time from Stats and the store) as sdnkvs_kvs_* metrics.
type safetyCollector struct {
	n     *Node
	descs map[string]*prometheus.Desc
}

var safetyMetrics = []struct{ name, help string }{
	{"voter", "1 while the node counts toward quorums, 0 while it is a learner."},
	{"repairing", "1 while the node pulls records from voters to become one."},
	{"id_collision", "1 once another process claimed this node's id (writes refused)."},
	{"disk_full", "1 while free disk space is below --min-free-disk (writes refused)."},
	{"damaged_reads_total", "Reads that found damaged data (checksum mismatch, corrupt record)."},
	{"damaged_at_open_total", "Stores found damaged at open, moved aside and rebuilt."},
	{"promotions_total", "Learner to voter transitions."},
	{"peer_auth_failures_total", "Peer handshakes that failed, either direction."},
	{"bad_tags_total", "Peer writes or answers refused for a non-member writer or an out-of-range counter."},
	{"id_collisions_total", "Handshakes where a peer claimed an id it does not own."},
	{"client_auth_failures_total", "Client commands answered NOAUTH or WRONGPASS."},
	{"clients_rejected_total", "Client connections refused over --maxclients."},
	{"clients_rejected_per_ip_total", "Client connections refused over --maxclients-per-ip."},
	{"forked_clients_over_max_total", "Forked connections (announced on the order stream) accepted over --maxclients, which every DC must serve alike."},
	{"slow_clients_closed_total", "Clients closed for not reading their replies in time."},
	{"protocol_error_clients_held_total", "Connections held before their close because their source IP exceeded --protocol-error-rate."},
	{"writes_refused_disk_total", "Client writes refused with MISCONF for lack of disk space."},
}

func newSafetyCollector(n *Node) *safetyCollector {
	c := &safetyCollector{n: n, descs: map[string]*prometheus.Desc{}}
	for _, m := range safetyMetrics {
		c.descs[m.name] = prometheus.NewDesc("sdnkvs_kvs_"+m.name, m.help, nil, nil)
	}
	return c
}

func (c *safetyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range safetyMetrics {
		ch <- c.descs[m.name]
	}
}

func (c *safetyCollector) Collect(ch chan<- prometheus.Metric) {
	n, s := c.n, &c.n.stats
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	gauge := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v)
	}
	cnt := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v))
	}
	gauge("voter", b(n.voter.Load()))
	gauge("repairing", b(n.repairing.Load()))
	gauge("id_collision", b(n.collision.Load()))
	gauge("disk_full", b(n.store.full.Load()))
	cnt("damaged_reads_total", n.store.Damaged.Load())
	cnt("damaged_at_open_total", s.DamageOpen.Load())
	cnt("promotions_total", s.Promotions.Load())
	cnt("peer_auth_failures_total", s.PeerAuthFail.Load())
	cnt("bad_tags_total", s.BadTags.Load())
	cnt("id_collisions_total", s.IDCollisions.Load())
	cnt("client_auth_failures_total", s.AuthFail.Load())
	cnt("clients_rejected_total", s.Rejected.Load())
	cnt("forked_clients_over_max_total", s.ForkedOverMax.Load())
	cnt("clients_rejected_per_ip_total", s.RejectedPerIP.Load())
	cnt("slow_clients_closed_total", s.SlowClients.Load())
	cnt("protocol_error_clients_held_total", s.ProtoHeld.Load())
	cnt("writes_refused_disk_total", s.DiskFull.Load())
}
