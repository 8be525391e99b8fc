package middlebox

import (
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
)

// Forked (multicast) flows: each connection goes to one node in every live
// DC; its ackmerge.Flow forks the client's segments and merges the
// replies. The middlebox feeds it packets and timer ticks and applies its
// events.

// stepFork feeds a packet to forked flow i and queues its output (under
// flows, on the data path).
func (m *Middlebox) stepFork(i int32, buf []byte, p *packet.TCP, from int) {
	f := &m.flows.tab.slab[i]
	m.dp.fout.Reset()
	f.fork.Step(buf, p, from, m.dp.nowTime, &m.dp.fout)
	m.dp.outs = m.drainFork(i, &m.dp.fout, m.dp.outs)
}

// tickFork runs forked flow i's timers and removes branches on nodes
// declared dead (the flow shrinks, docs/design.md section 4). Under
// timers and flows.
func (m *Middlebox) tickFork(i int32, now time.Time) {
	f := &m.flows.tab.slab[i]
	tm := &m.timers
	if !m.dropDeadBranches(i, now) {
		return
	}
	f.fork.Tick(now, &tm.out)
	tm.outs = m.drainFork(i, &tm.out, tm.outs)
	if f.used && m.flows.det != nil {
		m.reportLag(i, now)
	}
}

// dropDeadBranches removes from forked flow i the branches on nodes
// declared dead or cut off from the order stream; it reports whether the
// flow is still there. Under timers and flows.
func (m *Middlebox) dropDeadBranches(i int32, now time.Time) bool {
	f := &m.flows.tab.slab[i]
	tm := &m.timers
	for j := 0; j < int(f.nbranch); j++ {
		if f.gone&(1<<j) == 0 && (!m.nodes[f.nodes[j]].live.Load() || m.seqUnreachable(i, j, now)) {
			f.fork.RemoveBranch(j, ackmerge.CauseFailover, now, &tm.out)
			tm.outs = m.drainFork(i, &tm.out, tm.outs)
			if !f.used {
				return false
			}
		}
	}
	return true
}

// drainFork appends the packets of out to outs and applies its events to
// flow i (which it may remove). Under flows.
func (m *Middlebox) drainFork(i int32, out *ackmerge.Out, outs [][]byte) [][]byte {
	for _, e := range out.Pkts {
		outs = append(outs, e.Buf)
	}
	f := &m.flows.tab.slab[i]
	var removed uint8 // branches removed by these events (lifecycle)
	var causes [MaxBranches]ackmerge.Cause
	for _, ev := range out.Events {
		switch ev.Kind {
		case ackmerge.EvEstablished:
			m.establish(i)
		case ackmerge.EvBranchRemoved:
			if ev.Branch >= 0 && ev.Branch < int(f.nbranch) && f.gone&(1<<ev.Branch) == 0 {
				f.gone |= 1 << ev.Branch
				m.nodes[f.nodes[ev.Branch]].flows.Add(-1)
				m.c.branchesRemoved.Add(1)
				if ev.Cause == ackmerge.CauseReplyMismatch {
					m.replyMismatch(i, ev) // fork_verify.go
				}
				removed |= 1 << ev.Branch
				causes[ev.Branch] = ev.Cause
			}
		case ackmerge.EvClientReset:
			m.c.forkResets.Add(1)
		case ackmerge.EvDone:
			if f.used {
				m.removeFlow(i)
				m.c.flowsExpired.Add(1)
			}
		}
	}
	out.Reset()
	if removed != 0 && m.life != nil {
		now := m.cfg.Now()
		if m.lifeBranchesRemoved(i, removed, &causes, now) {
			// Only stale (joining) DCs left: reset the client rather than
			// acknowledge its bytes without a current DC.
			for j := range int(f.nbranch) {
				if f.used && f.gone&(1<<j) == 0 {
					f.fork.RemoveBranch(j, ackmerge.CauseFailover, now, out)
					outs = m.drainFork(i, out, outs)
				}
			}
		}
	}
	return outs
}

// bufPool is a fixed set of packet buffers handed out during one batch (or
// one timer pass) and all returned at its end. Not safe for concurrent use.
type bufPool struct {
	free  [][]byte
	inUse [][]byte
	size  int // length of every buffer
}

// get returns a free buffer of at least n bytes, or nil when none is left.
func (p *bufPool) get(n int) []byte {
	k := len(p.free)
	if k == 0 || n > p.size {
		return nil
	}
	b := p.free[k-1]
	p.free = p.free[:k-1]
	p.inUse = append(p.inUse, b)
	return b
}

// releaseAll returns every buffer handed out since the last call.
func (p *bufPool) releaseAll() {
	p.free = append(p.free, p.inUse...)
	p.inUse = p.inUse[:0]
}

// alloc gives ackmerge a buffer for an extra packet of the current batch.
func (m *Middlebox) alloc(n int) []byte { return m.counted(m.dp.pool.get(n)) }

// tickAlloc is alloc for packets made by timers (under timers).
func (m *Middlebox) tickAlloc(n int) []byte { return m.counted(m.timers.pool.get(n)) }

// counted counts a buffer shortage (the packet is dropped).
func (m *Middlebox) counted(b []byte) []byte {
	if b == nil {
		m.drop(ReasonNoBuffer)
	}
	return b
}
