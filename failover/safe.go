package failover

import (
	"fmt"
	"net/netip"
	"time"
)

// Safe mode's passive rule: Algorithm 1's duplicates count against a node
// only as evidence no single client can produce (several clients, several
// flows, the node's silence, a failed probe), and decisions on such
// evidence are guarded (never the last live DC, at most one per
// PassiveInterval). Probe rules are shared with Fast mode (observe.go).

// checkCorroborated is Safe mode's Algorithm 1: the duplicates must come
// from at least MinClients distinct clients on MinFlows distinct flows
// (one client cannot produce them alone), the node must have sent nothing
// at all for the silence threshold, and, if the node is probed, its latest
// probe must have failed. Then passiveDown applies its guards.
func (d *Detector[K]) checkCorroborated(n NodeID) {
	ns := &d.nodes[n]
	if ns.nClients < d.cfg.MinClients || ns.nFlows < d.cfg.MinFlows {
		return
	}
	since := ns.lastServer
	if since.IsZero() {
		since = ns.evSince
	}
	quiet := d.now.Sub(since)
	if quiet < d.SilenceThreshold(n) {
		return
	}
	if ns.probed && ns.misses == 0 {
		return // its probes pass: not confirmed
	}
	d.passiveDown(n, SignalDuplicates, fmt.Sprintf("%d duplicate client segments from %d clients on %d flows, no packet from the server for %v, probes failing",
		ns.dups, ns.nClients, ns.nFlows, quiet.Round(time.Millisecond)))
}

// passiveDown declares node n down on passive evidence (Safe mode) unless
// that would take down the last live DC, or another passive decision was
// taken less than PassiveInterval ago; a held decision is counted and
// retried by later observations and ticks.
func (d *Detector[K]) passiveDown(n NodeID, sig Signal, cause string) {
	ns := &d.nodes[n]
	if d.lastCurrent(ns.info.DC) {
		d.stats.PassiveHeld++
		return
	}
	if !d.lastPassive.IsZero() && d.now.Sub(d.lastPassive) < d.cfg.PassiveInterval {
		d.stats.PassiveHeld++
		return
	}
	d.lastPassive = d.now
	d.markDown(n, sig, cause)
}

// liveDCs returns the number of DCs with a live node.
func (d *Detector[K]) liveDCs() int {
	k := 0
	for i := range d.dcs {
		if d.dcs[i].live > 0 {
			k++
		}
	}
	return k
}

// countDup counts a duplicate client segment against node n (Algorithm
// 1), as evidence from client on flow f, and applies the rule.
func (d *Detector[K]) countDup(n NodeID, f *flowState, client netip.Addr) {
	ns := &d.nodes[n]
	ns.dups++
	d.stats.Duplicates++
	if ns.evSince.IsZero() {
		ns.evSince = d.now
	}
	if f.dupEpoch != ns.epoch+1 {
		f.dupEpoch = ns.epoch + 1
		ns.nFlows++
	}
	if client.IsValid() && ns.nClients < len(ns.evClients) {
		seen := false
		for _, c := range ns.evClients[:ns.nClients] {
			seen = seen || c == client
		}
		if !seen {
			ns.evClients[ns.nClients] = client
			ns.nClients++
		}
	}
	d.checkDups(n)
}

// heardServer starts a new evidence epoch: any packet from the node resets
// Algorithm 1's count and Safe mode's evidence.
func (ns *nodeState) heardServer() {
	ns.dups = 0
	ns.epoch++
	ns.nClients, ns.nFlows = 0, 0
	ns.evSince = time.Time{}
}
