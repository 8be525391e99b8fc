package middlebox

import (
	"fmt"
	"time"

	"github.com/sdnkvs/sdnkvs/ackmerge"
)

// Reply verification (ackmerge/verify.go): a branch of a forked flow whose
// reply bytes differ from the other DCs' leaves the flow like any shrink
// (fork.go counts it in fork_branches_removed_total); here it is also
// counted on its own and logged with the flow, the DC, the reply offset
// from which the bytes differed and the last reply bytes of both sides
// (at most ackmerge.ReplyTail each, quoted), so that an operator sees why
// the DC was marked out of sync. Logs are rate-limited: at most
// mismatchLogBurst per mismatchLogEvery, the others counted and reported
// with the next one logged.

const (
	mismatchLogEvery = time.Second
	mismatchLogBurst = 4
)

// mismatchLog is the rate limiter of reply mismatch logs (under flows).
type mismatchLog struct {
	since      time.Time // start of the current period
	n          int       // logged in this period
	suppressed int       // not logged since the last one logged
}

// allow reports whether a log may be written at now, and how many were
// suppressed before it.
func (l *mismatchLog) allow(now time.Time) (ok bool, suppressed int) {
	if now.Sub(l.since) >= mismatchLogEvery || now.Before(l.since) {
		l.since, l.n = now, 0
	}
	if l.n >= mismatchLogBurst {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

// replyMismatch records the removal of branch ev.Branch of forked flow i
// for CauseReplyMismatch. Under flows.
func (m *Middlebox) replyMismatch(i int32, ev ackmerge.Event) {
	f := &m.flows.tab.slab[i]
	m.c.replyMismatches.Add(1)
	ok, suppressed := m.flows.mismatchLog.allow(m.cfg.Now())
	if !ok {
		return
	}
	n := m.nodes[f.nodes[ev.Branch]]
	attrs := []any{"client", f.fork.Client(), "vip", f.fork.VIP(), "dc", m.dcs[n.dc].Name, "node", n.ap, "offset", ev.Offset}
	attrs = append(attrs, "bytes", replyTail(f.fork, ev.Branch))
	if ev.Peer != ev.Branch && ev.Peer >= 0 && ev.Peer < int(f.nbranch) {
		p := m.nodes[f.nodes[ev.Peer]]
		attrs = append(attrs, "peer_dc", m.dcs[p.dc].Name, "peer_bytes", replyTail(f.fork, ev.Peer))
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	m.log.Warn("forked flow: DC replied different bytes; branch removed", attrs...)
}

// replyTail shows the last reply bytes branch k of fl sent, with their
// stream offsets: "[from,to) \"...\"".
func replyTail(fl *ackmerge.Flow, k int) string {
	end, b := fl.ReplyTail(k)
	return fmt.Sprintf("[%d,%d) %q", end-uint64(len(b)), end, b)
}
