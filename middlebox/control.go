package middlebox

import (
	"encoding/json"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/failover"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Stats is a snapshot of the middlebox's counters.
type Stats struct {
	PacketsIn, PacketsOut uint64
	BytesIn, BytesOut     uint64
	Local                 uint64 // packets handed to the Stack
	RSTSent               uint64 // RSTs the middlebox made (table full, no live node)
	FlowsActive           int
	FlowsCreated          uint64
	FlowsExpired          uint64 // removed by idle timeout or after the FIN linger
	FlowsReset            uint64 // removed at once by a RST from either side
	Drops                 map[string]uint64
}

// Drop returns the drop counter for reason r.
func (m *Middlebox) Drop(r Reason) uint64 { return m.c.drops[r].Load() }

// Stats returns a snapshot of the counters.
func (m *Middlebox) Stats() Stats {
	s := Stats{
		PacketsIn:    m.c.pktsIn.Load(),
		PacketsOut:   m.c.pktsOut.Load(),
		BytesIn:      m.c.bytesIn.Load(),
		BytesOut:     m.c.bytesOut.Load(),
		Local:        m.c.local.Load(),
		RSTSent:      m.c.rstSent.Load(),
		FlowsCreated: m.c.flowsCreated.Load(),
		FlowsExpired: m.c.flowsExpired.Load(),
		FlowsReset:   m.c.flowsReset.Load(),
		Drops:        map[string]uint64{},
	}
	for r := range numReasons {
		s.Drops[r.String()] = m.c.drops[r].Load()
	}
	m.flows.Lock()
	s.FlowsActive = m.flows.tab.count
	m.flows.Unlock()
	return s
}

// FlowInfo describes one flow for /flows.
type FlowInfo struct {
	Client   string   `json:"client"`
	VIPPort  uint16   `json:"vip_port"`
	Kind     string   `json:"kind"`
	DC       string   `json:"dc"`
	Nodes    []string `json:"nodes"`
	AgeSec   float64  `json:"age_seconds"`
	IdleSec  float64  `json:"idle_seconds"`
	BytesIn  uint64   `json:"bytes_in"`
	BytesOut uint64   `json:"bytes_out"`
	PktsIn   uint64   `json:"packets_in"`
	PktsOut  uint64   `json:"packets_out"`
	State    string   `json:"state"`
	// Forked flows only.
	Branches []BranchInfo    `json:"branches,omitempty"`
	Fork     *ackmerge.Stats `json:"fork,omitempty"`
}

// BranchInfo describes one branch of a forked flow.
type BranchInfo struct {
	Node     string `json:"node"`
	Live     bool   `json:"live"`
	Answered bool   `json:"answered"`
	Cause    string `json:"cause,omitempty"`
	Acked    uint64 `json:"acked_bytes"`
	Covered  uint64 `json:"covered_bytes"`
	Window   uint32 `json:"window"`
}

// MaxFlowsPage caps the flows one /flows request returns.
const MaxFlowsPage = 1000

// flowsChunk is how many table slots FlowsPage visits per hold of the
// flow table's lock, so the data path never waits longer than one chunk.
const flowsChunk = 256

// Flows returns the flow table, at most limit entries (limit <= 0: all),
// taking the table's lock one chunk at a time.
func (m *Middlebox) Flows(limit int) []FlowInfo {
	out, _ := m.FlowsPage(0, limit)
	return out
}

// FlowsPage returns up to limit flows (limit <= 0: all) from table
// position from on, and the position to continue from (-1 at the end). It
// holds the flow table's lock for at most flowsChunk slots at a time: a
// page is not a snapshot, flows created or removed meanwhile may be
// missed or seen.
func (m *Middlebox) FlowsPage(from, limit int) (out []FlowInfo, next int) {
	now := m.cfg.Now().UnixNano()
	i := max(from, 0)
	for {
		m.flows.Lock()
		slab := m.flows.tab.slab
		end := min(i+flowsChunk, len(slab))
		for ; i < end && (limit <= 0 || len(out) < limit); i++ {
			if slab[i].used {
				out = append(out, m.flowInfo(&slab[i], now))
			}
		}
		atEnd := i >= len(slab)
		m.flows.Unlock()
		switch {
		case atEnd:
			return out, -1
		case limit > 0 && len(out) >= limit:
			return out, i
		}
	}
}

// flowInfo describes flow f (under flows).
func (m *Middlebox) flowInfo(f *flow, now int64) FlowInfo {
	fi := FlowInfo{
		Client:   netip.AddrPortFrom(netip.AddrFrom4(f.key.cli), f.key.cport).String(),
		VIPPort:  f.key.vport,
		Kind:     "anycast",
		AgeSec:   float64(now-f.created) / 1e9,
		IdleSec:  float64(now-f.last) / 1e9,
		BytesIn:  f.bytesIn,
		BytesOut: f.bytesOut,
		PktsIn:   f.pktsIn,
		PktsOut:  f.pktsOut,
	}
	if f.kind == kindForked {
		fi.Kind = "forked"
		st := f.fork.Stats()
		fi.Fork = &st
		fi.State = f.fork.State().String()
		for k := range f.fork.NumBranches() {
			b := f.fork.Branch(k)
			bi := BranchInfo{Node: b.Target.Addr.String(), Live: b.Live, Answered: b.Answered, Acked: b.Acked, Covered: b.Covered, Window: b.Window}
			if !b.Live {
				bi.Cause = b.Cause.String()
			}
			fi.Branches = append(fi.Branches, bi)
		}
	}
	switch {
	case fi.State != "":
	case f.state == stClosing:
		fi.State = "closing"
	case f.finCli || f.finSrv:
		fi.State = "half-closed"
	case f.state == stEstablished:
		fi.State = "established"
	case f.state == stSynRecv:
		fi.State = "syn-received"
	case f.state == stAdopted:
		fi.State = "adopted"
	default:
		fi.State = "syn-sent"
	}
	for j := 0; j < int(f.nbranch); j++ {
		n := m.nodes[f.nodes[j]]
		fi.Nodes = append(fi.Nodes, n.ap.String())
		if j == 0 {
			fi.DC = m.dcs[n.dc].Name
		}
	}
	return fi
}

// NodeInfo and DCInfo describe the DCs for /dcs.
type NodeInfo struct {
	Addr        string `json:"addr"`
	Live        bool   `json:"live"`
	ActiveFlows int64  `json:"active_flows"`
	TotalFlows  uint64 `json:"total_flows"`
	// With a failure detector:
	Cause       string  `json:"cause,omitempty"`        // of the last transition
	Since       string  `json:"since,omitempty"`        // time of the last transition
	ProbeMisses int     `json:"probe_misses,omitempty"` // consecutive
	SRTTms      float64 `json:"srtt_ms,omitempty"`
	// With sequencing: the node's order stream.
	Order *OrderInfo `json:"order,omitempty"`
}

type DCInfo struct {
	Name       string     `json:"name"`
	Preference int        `json:"preference"` // 0 is the most preferred
	Live       bool       `json:"live"`       // at least one live node
	Nodes      []NodeInfo `json:"nodes"`
	// Transitions are the detector's recent decisions about this DC and
	// its nodes, oldest first.
	Transitions []TransitionInfo `json:"transitions,omitempty"`
	// AppliedG is, with sequencing, the highest sequencer position any
	// node of the DC reported applied.
	AppliedG uint64 `json:"applied_g,omitempty"`
	// The DC's lifecycle (with Config.Lifecycle).
	DCLifeInfo
}

// TransitionInfo is one failover decision for /dcs.
type TransitionInfo struct {
	At     string `json:"at"`
	Kind   string `json:"kind"`
	Node   string `json:"node,omitempty"`
	Signal string `json:"signal"`
	Cause  string `json:"cause"`
}

// DCs returns the DCs in preference order with their nodes' state.
func (m *Middlebox) DCs() []DCInfo {
	var trans []failover.Transition
	status := make([]failover.NodeStatus, len(m.nodes))
	if m.flows.det != nil {
		m.flows.Lock()
		trans = m.flows.det.Transitions()
		for i := range m.nodes {
			status[i], _ = m.flows.det.NodeState(failover.NodeID(i))
		}
		m.flows.Unlock()
	}
	out := make([]DCInfo, 0, len(m.dcs))
	for d, dc := range m.dcs {
		di := DCInfo{Name: dc.Name, Preference: d, AppliedG: m.dcAppliedG(d), DCLifeInfo: m.lifeInfo(d)}
		for _, ni := range m.dcNode[d] {
			n := m.nodes[ni]
			live := n.live.Load()
			di.Live = di.Live || live
			info := NodeInfo{Addr: n.ap.String(), Live: live, ActiveFlows: n.flows.Load(), TotalFlows: n.total.Load(), Order: m.orderInfo(ni)}
			if st := status[ni]; m.flows.det != nil {
				info.Cause, info.ProbeMisses, info.SRTTms = st.Cause, st.Misses, float64(st.SRTT)/1e6
				if !st.Since.IsZero() {
					info.Since = st.Since.Format(time.RFC3339Nano)
				}
			}
			di.Nodes = append(di.Nodes, info)
		}
		for _, tr := range trans {
			if int(tr.DC) != d {
				continue
			}
			ti := TransitionInfo{At: tr.At.Format(time.RFC3339Nano), Kind: tr.Kind.String(), Signal: tr.Signal.String(), Cause: tr.Cause}
			if tr.Node >= 0 && int(tr.Node) < len(m.nodes) {
				ti.Node = m.nodes[tr.Node].ap.String()
			}
			di.Transitions = append(di.Transitions, ti)
		}
		out = append(out, di)
	}
	return out
}

// collector exports the counters to Prometheus at scrape time.
type collector struct {
	m                                              *Middlebox
	pktsIn, pktsOut, bytesIn, bytesOut, local, rst *prometheus.Desc
	drops, active, created, expired, reset         *prometheus.Desc
	nodeFlows, nodeTotal, nodeLive                 *prometheus.Desc
	nodeDowns, nodeUps, failoverRST, branchRemoved *prometheus.Desc
	forkResets, probesLost                         *prometheus.Desc
	replyMismatch                                  *prometheus.Desc
	adopted, hoEvicted, hoExpired, rstPassed       *prometheus.Desc
	detTracked, detEvicted, detHeld, detLastDC     *prometheus.Desc
	detRefuted                                     *prometheus.Desc
}

func newCollector(m *Middlebox) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sdnkvs_middlebox_"+name, help, labels, nil)
	}
	return &collector{
		m:             m,
		pktsIn:        d("packets_in_total", "Packets read from the device."),
		pktsOut:       d("packets_out_total", "Packets written to the device."),
		bytesIn:       d("bytes_in_total", "IP bytes read from the device."),
		bytesOut:      d("bytes_out_total", "IP bytes written to the device."),
		local:         d("local_packets_total", "Packets delivered to the middlebox's own stack (ICMP, non-service ports)."),
		rst:           d("rst_sent_total", "RSTs sent to clients (flow table full, no live node)."),
		drops:         d("drops_total", "Packets dropped, by reason.", "reason"),
		active:        d("flows_active", "Flows in the flow table."),
		created:       d("flows_created_total", "Flows created."),
		expired:       d("flows_expired_total", "Flows removed by idle timeout or after their FIN linger."),
		reset:         d("flows_reset_total", "Flows removed by a RST."),
		nodeFlows:     d("node_flows_active", "Active flows per node.", "dc", "node"),
		nodeTotal:     d("node_flows_total", "Flows ever assigned per node.", "dc", "node"),
		nodeLive:      d("node_live", "1 if the node is considered live.", "dc", "node"),
		nodeDowns:     d("failover_node_down_total", "Nodes declared down by the failure detector."),
		nodeUps:       d("failover_node_up_total", "Nodes readmitted by the failure detector."),
		failoverRST:   d("failover_rst_total", "RSTs sent to clients of anycast flows on nodes declared down (also in rst_sent_total)."),
		branchRemoved: d("fork_branches_removed_total", "Branches removed from forked flows (failover, lag, RST, divergence)."),
		replyMismatch: d("fork_reply_mismatches_total", "Branches removed from forked flows because their DC replied other bytes than the others (reply verification; also in fork_branches_removed_total)."),
		forkResets:    d("fork_client_resets_total", "Forked flows whose client was reset (fewer live branches than min replicas)."),
		probesLost:    d("failover_probes_lost_total", "Probe results dropped because the queue to the detector was full."),
		adopted:       d("flows_adopted_total", "Anycast flows re-adopted from a packet of an unknown flow (after a restart or an eviction)."),
		hoEvicted:     d("half_open_evicted_total", "Half-open flows evicted from a full table for a new one."),
		hoExpired:     d("half_open_expired_total", "Half-open flows removed after the half-open timeout."),
		rstPassed:     d("rst_passed_total", "Client RSTs not at the node's rcv.nxt passed to the node (challenge ACK) with the flow kept (RFC 5961)."),
		detTracked:    d("failover_flows_tracked", "Flows (branches) the failure detector tracks."),
		detEvicted:    d("failover_flows_evicted_total", "Flows the failure detector forgot to make room (its table full), idle and half-open first."),
		detHeld:       d("failover_passive_held_total", "Passive down decisions held (the last live DC, or the rate limit)."),
		detLastDC:     d("failover_last_dc_held_total", "Down decisions held because they would take down the last live DC (safe and fast modes)."),
		detRefuted:    d("failover_probe_streaks_refuted_total", "Streaks of failed probes ended by a new reply of the node on a flow (safe and fast modes): the probe path, not the node, was slow."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pktsIn, c.pktsOut, c.bytesIn, c.bytesOut, c.local, c.rst, c.drops, c.active, c.created, c.expired, c.reset, c.nodeFlows, c.nodeTotal, c.nodeLive, c.nodeDowns, c.nodeUps, c.failoverRST, c.branchRemoved, c.replyMismatch, c.forkResets, c.probesLost, c.adopted, c.hoEvicted, c.hoExpired, c.rstPassed, c.detTracked, c.detEvicted, c.detHeld, c.detLastDC, c.detRefuted} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	s := m.Stats()
	cnt := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	cnt(c.pktsIn, s.PacketsIn)
	cnt(c.pktsOut, s.PacketsOut)
	cnt(c.bytesIn, s.BytesIn)
	cnt(c.bytesOut, s.BytesOut)
	cnt(c.local, s.Local)
	cnt(c.rst, s.RSTSent)
	for r := range numReasons {
		cnt(c.drops, m.c.drops[r].Load(), r.String())
	}
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(s.FlowsActive))
	cnt(c.created, s.FlowsCreated)
	cnt(c.expired, s.FlowsExpired)
	cnt(c.reset, s.FlowsReset)
	cnt(c.nodeDowns, m.c.nodeDowns.Load())
	cnt(c.nodeUps, m.c.nodeUps.Load())
	cnt(c.failoverRST, m.c.failoverRSTs.Load())
	cnt(c.branchRemoved, m.c.branchesRemoved.Load())
	cnt(c.replyMismatch, m.c.replyMismatches.Load())
	cnt(c.forkResets, m.c.forkResets.Load())
	cnt(c.probesLost, m.c.probesLost.Load())
	cnt(c.adopted, m.c.flowsAdopted.Load())
	cnt(c.hoEvicted, m.c.halfOpenEvicted.Load())
	cnt(c.hoExpired, m.c.halfOpenExpired.Load())
	cnt(c.rstPassed, m.c.rstPassed.Load())
	if m.flows.det != nil {
		m.flows.Lock()
		ds, tracked := m.flows.det.Stats(), m.flows.det.NumFlows()
		m.flows.Unlock()
		ch <- prometheus.MustNewConstMetric(c.detTracked, prometheus.GaugeValue, float64(tracked))
		cnt(c.detEvicted, ds.FlowsEvicted)
		cnt(c.detHeld, ds.PassiveHeld)
		cnt(c.detLastDC, ds.LastDCHeld)
		cnt(c.detRefuted, ds.ProbeStreaksRefuted)
	}
	for _, n := range m.nodes {
		dc, addr := m.dcs[n.dc].Name, n.ap.String()
		ch <- prometheus.MustNewConstMetric(c.nodeFlows, prometheus.GaugeValue, float64(n.flows.Load()), dc, addr)
		cnt(c.nodeTotal, n.total.Load(), dc, addr)
		live := 0.0
		if n.live.Load() {
			live = 1
		}
		ch <- prometheus.MustNewConstMetric(c.nodeLive, prometheus.GaugeValue, live, dc, addr)
	}
}

// Handler serves the control API:
//
//	/metrics   Prometheus text (counters, drops by reason, flows, per-node flows)
//	/flows     JSON list of flows, a page at a time: ?limit=N (default and
//	           at most MaxFlowsPage), ?from=P (P from the X-Flows-Next
//	           header of the previous page; absent on the last page)
//	/dcs       JSON list of DCs in preference order with node liveness and,
//	           with a lifecycle, state, since, cause, cursor, flows lacking
//	           and catch-up progress
//	POST /dcs/NAME/admit  admit joining DC NAME (rejoin manual; catchup
//	           only when no DC is live)
//	/healthz   "ok"
//
// Safe for concurrent use.
func (m *Middlebox) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(m), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if m.seq != nil {
		reg.MustRegister(newSeqCollector(m))
	}
	if m.life != nil {
		reg.MustRegister(newLifeCollector(m))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /flows", func(w http.ResponseWriter, r *http.Request) {
		limit, from := MaxFlowsPage, 0
		q := r.URL.Query()
		if s := q.Get("limit"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 {
				http.Error(w, "limit: want a number >= 0", http.StatusBadRequest)
				return
			}
			if v > 0 {
				limit = min(v, MaxFlowsPage)
			}
		}
		if s := q.Get("from"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 {
				http.Error(w, "from: want a position from X-Flows-Next", http.StatusBadRequest)
				return
			}
			from = v
		}
		page, next := m.FlowsPage(from, limit)
		if next >= 0 {
			w.Header().Set("X-Flows-Next", strconv.Itoa(next))
		}
		writeJSON(w, page)
	})
	mux.HandleFunc("GET /dcs", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, m.DCs()) })
	mux.HandleFunc("POST /dcs/{name}/admit", m.handleAdmit)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-m.closed:
			http.Error(w, "closed", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ok\n"))
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
