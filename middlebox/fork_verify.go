package middlebox

import "github.com/sdnkvs/sdnkvs/ackmerge"

// Reply verification (ackmerge/verify.go): a branch of a forked flow whose
// reply bytes differ from the other DCs' leaves the flow like any shrink
// (fork.go counts it in fork_branches_removed_total); here it is also
// counted on its own and logged with the flow, the DC and the reply offset
// from which the bytes differed, so that the DC can be marked out of sync.

// replyMismatch records the removal of branch ev.Branch of forked flow i
// for CauseReplyMismatch. Under flows.
func (m *Middlebox) replyMismatch(i int32, ev ackmerge.Event) {
	f := &m.flows.tab.slab[i]
	m.c.replyMismatches.Add(1)
	n := m.nodes[f.nodes[ev.Branch]]
	m.log.Warn("forked flow: DC replied different bytes; branch removed",
		"client", f.fork.Client(), "vip", f.fork.VIP(), "dc", m.dcs[n.dc].Name, "node", n.ap, "offset", ev.Offset)
}
