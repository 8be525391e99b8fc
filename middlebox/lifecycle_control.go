package middlebox

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sdnkvs/sdnkvs/failover"
)

// DCLifeInfo is a DC's lifecycle on /dcs (fields of DCInfo).
type DCLifeInfo struct {
	State        string        `json:"state,omitempty"` // live, down, joining
	Since        string        `json:"since,omitempty"`
	Cause        string        `json:"cause,omitempty"`
	InSync       bool          `json:"in_sync,omitempty"`
	Cursor       *failover.Tag `json:"cursor,omitempty"` // out of sync since (every record it may lack is above)
	FlowsLacking int           `json:"flows_lacking"`
	NeedsVerify  bool          `json:"needs_verify"` // missed bytes for a divergence: admitted only after a verify pass
	Catchup      *CatchupInfo  `json:"catchup,omitempty"`
}

// CatchupInfo is a joining DC's running catch-up pass (or, when none
// runs, its last completed one).
type CatchupInfo struct {
	Job         uint64       `json:"job"`
	Source      string       `json:"source"`
	Node        string       `json:"node,omitempty"` // the node running it ("" not sent yet)
	State       string       `json:"state"`          // running, waiting (no node or source yet), done
	Clean       bool         `json:"clean"`          // admits the DC when it completes (unless it needs verify)
	Verify      bool         `json:"verify"`         // a verify pass: repairs every record at or below bound to the source's first
	Bound       uint64       `json:"bound"`          // the pass's start G minus the margin
	Started     string       `json:"started,omitempty"`
	From        failover.Tag `json:"from"`
	Keys        uint64       `json:"keys"`
	Bytes       uint64       `json:"bytes"`
	Remaining   uint64       `json:"remaining"` // records left (estimate); 18446744073709551615 unknown
	Rate        float64      `json:"rate"`      // bytes per second
	KeysPerSec  float64      `json:"keys_per_sec"`
	ETA         float64      `json:"eta_s"` // -1 unknown
	Passes      uint64       `json:"passes"`
	PassesTotal uint64       `json:"passes_total"`
}

// lifeInfo fills DC d's lifecycle fields (takes flows).
func (m *Middlebox) lifeInfo(d int) DCLifeInfo {
	if m.life == nil {
		return DCLifeInfo{}
	}
	m.flows.Lock()
	s, _ := m.life.m.Status(failover.DCID(d))
	node := m.life.jobNode[d]
	m.flows.Unlock()
	li := DCLifeInfo{State: s.State.String(), Since: s.Since.Format(time.RFC3339Nano), Cause: s.Cause.String(), InSync: s.InSync, FlowsLacking: s.FlowsLacking,
		NeedsVerify: s.NeedsVerify}
	if !s.InSync {
		c := s.Cursor
		li.Cursor = &c
	}
	switch {
	case s.Job != nil:
		j := s.Job
		ci := &CatchupInfo{Job: j.Job, Source: j.Source, State: "waiting", Clean: j.Clean, Verify: j.Verify, Bound: j.Bound,
			Started: j.Started.Format(time.RFC3339Nano), From: j.From,
			Keys: j.Keys, Bytes: j.Bytes, Remaining: ^uint64(0), Rate: j.BytesPerSec, KeysPerSec: j.KeysPerSec, ETA: -1, Passes: s.Passes, PassesTotal: s.Passes}
		if node >= 0 {
			ci.Node, ci.State = m.nodes[node].ap.String(), "running"
		}
		if j.Remaining >= 0 {
			ci.Remaining = uint64(j.Remaining)
		}
		if j.ETA >= 0 {
			ci.ETA = j.ETA.Seconds()
		}
		li.Catchup = ci
	case s.LastPass != nil && s.State == failover.DCStateJoining:
		p := s.LastPass
		li.Catchup = &CatchupInfo{Job: p.Job, State: "done", Keys: p.Keys, Bytes: p.Bytes, Remaining: p.Remaining, ETA: -1, Passes: s.Passes, PassesTotal: s.Passes}
	}
	return li
}

// handleAdmit serves POST /dcs/{name}/admit.
func (m *Middlebox) handleAdmit(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := m.AdmitDC(name); err != nil {
		code := http.StatusConflict
		if m.life == nil || errors.Is(err, failover.ErrNotManual) {
			code = http.StatusMethodNotAllowed
		}
		http.Error(w, err.Error(), code)
		return
	}
	st, _ := m.DCLifecycle(name)
	writeJSON(w, map[string]string{"dc": name, "state": st.State.String()})
}

// lifeCollector exports the lifecycle at scrape time.
type lifeCollector struct {
	m                                   *Middlebox
	state, trans, keys, bytes, rem, lac *prometheus.Desc
	refused, resets, persistErrs, pass  *prometheus.Desc
	verifyPass                          *prometheus.Desc
}

func newLifeCollector(m *Middlebox) *lifeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sdnkvs_"+name, help, labels, nil)
	}
	return &lifeCollector{
		m:           m,
		state:       d("dc_state", "1 for the DC's lifecycle state (live, down, joining), 0 for the others.", "dc", "state"),
		trans:       d("dc_transitions_total", "DC lifecycle transitions, by state entered and cause.", "state", "cause"),
		keys:        d("dc_catchup_keys", "Records copied by the joining DC's running catch-up pass.", "dc"),
		bytes:       d("dc_catchup_bytes", "Bytes copied by the joining DC's running catch-up pass.", "dc"),
		rem:         d("dc_catchup_remaining", "Records the running catch-up pass estimates are left (-1 unknown).", "dc"),
		lac:         d("dc_flows_lacking", "Forked flows that lack the DC (opened while it was down, or dropped its branch).", "dc"),
		pass:        d("dc_catchup_passes_total", "Catch-up passes started for the DC.", "dc"),
		verifyPass:  d("dc_catchup_verify_passes_total", "Verify passes started for the DC (part of the catch-up passes): after a divergence, at most one per --rejoin-verify-every.", "dc"),
		refused:     d("middlebox_lifecycle_refused_total", "New connections refused (RST) because no DC was live, only joining or down ones."),
		resets:      d("middlebox_lifecycle_flow_resets_total", "Forked flows reset because they lacked a joining DC past --rejoin-reset-after."),
		persistErrs: d("middlebox_lifecycle_persist_errors_total", "Failed writes of the lifecycle state file."),
	}
}

func (c *lifeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.trans, c.keys, c.bytes, c.rem, c.lac, c.pass, c.verifyPass, c.refused, c.resets, c.persistErrs} {
		ch <- d
	}
}

func (c *lifeCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	l := m.life
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	cnt := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	m.flows.Lock()
	st := l.m.Stats()
	status := make([]failover.LifeStatus, len(m.dcs))
	for d := range m.dcs {
		status[d], _ = l.m.Status(failover.DCID(d))
	}
	m.flows.Unlock()
	for d, dc := range m.dcs {
		s := status[d]
		for _, x := range failover.DCStates() {
			v := 0.0
			if s.State == x {
				v = 1
			}
			gauge(c.state, v, dc.Name, x.String())
		}
		var keys, bytes, rem float64
		if j := s.Job; j != nil {
			keys, bytes, rem = float64(j.Keys), float64(j.Bytes), float64(j.Remaining)
		}
		gauge(c.keys, keys, dc.Name)
		gauge(c.bytes, bytes, dc.Name)
		gauge(c.rem, rem, dc.Name)
		gauge(c.lac, float64(s.FlowsLacking), dc.Name)
		cnt(c.pass, s.Passes, dc.Name)
		cnt(c.verifyPass, s.VerifyPasses, dc.Name)
	}
	for _, x := range failover.DCStates() {
		for _, cause := range failover.LifeCauses() {
			if v := st.Transitions[x][cause]; v > 0 {
				cnt(c.trans, v, x.String(), cause.String())
			}
		}
	}
	cnt(c.refused, l.refused.Load())
	cnt(c.resets, l.resets.Load())
	cnt(c.persistErrs, l.persistErrs.Load())
}
