package failover

import (
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Segment describes one TCP segment as the middlebox saw it. For client
// segments Seq is in the client's sequence space; for server segments Ack
// acknowledges client bytes, so it is in the client's sequence space too
// (the middlebox never translates client sequence numbers), and Seq is in
// the server's own sequence space, consistent per flow (new reply payload
// is evidence of life, see Probe). Len is the payload length; SYN and FIN
// each occupy one sequence number.
type Segment struct {
	Seq   seqnum.Value
	Ack   seqnum.Value
	Len   int
	Flags header.TCPFlags
	// Client is the client's address (for client segments). Safe mode
	// counts duplicates as evidence only from several distinct clients.
	Client netip.Addr
}

// ProbeResult is the outcome of one active probe of a node.
type ProbeResult struct {
	// OK: the node answered (TCP connect accepted, or an HTTP reply of any
	// status).
	OK bool
	// Ready: the node says it can serve (HTTP 200 from /ready; a successful
	// TCP connect counts as ready).
	Ready bool
	// RTT of the probe; zero if unknown. Feeds the node's RTT estimate.
	RTT time.Duration
}

// flowState is what the detector keeps per flow (per branch, for forked
// flows): enough to tell a retransmission and unacknowledged data.
type flowState struct {
	node NodeID
	// sndNxt is the end of the highest client sequence seen; srvAck the
	// highest acknowledgement from the server (initially the start of the
	// first client segment seen: earlier bytes count as acknowledged).
	sndNxt, srvAck seqnum.Value
	// srvSince: the server has sent on this flow since the client's
	// previous segment with sequence space. A retransmission counts for
	// Algorithm 1 only when false.
	srvSince    bool
	srvSeen     bool // the server has sent on this flow
	outstanding bool
	// dupEpoch is the node's evidence epoch in which this flow last
	// counted a duplicate (Safe mode: each flow counts once per epoch).
	dupEpoch uint32
	// srvNxt is the end of the highest server payload seen (valid when
	// srvData): a segment that extends it is a new reply, which only the
	// server process can send.
	srvNxt     seqnum.Value
	srvData    bool
	outSince   time.Time // when outstanding last became true
	lagSince   time.Time
	last       time.Time // last segment either way
	lastClient time.Time // last client segment
}

// maxRTT bounds an RTT sample, so bad input cannot overflow the estimate.
const maxRTT = time.Minute

// ClientSegment observes a segment from the client on flow to node. It
// counts duplicates for the paper's Algorithm 1 and tracks unacknowledged
// client data. The returned decisions are valid until the next call.
func (d *Detector[K]) ClientSegment(now time.Time, flow K, node NodeID, seg Segment) []Decision {
	d.advance(now)
	d.stats.ClientSegments++
	if !d.validNode(node) || seg.Len < 0 {
		d.stats.BadInput++
		return d.out
	}
	if seg.Flags&header.TCPFlagRst != 0 {
		return d.out // a client reset carries no sequence space
	}
	i, ok := d.ft.lookup(flow)
	if ok && d.ft.ents[i].st.node != node {
		d.dropFlow(i) // the caller moved the flow to another node
		ok = false
	}
	if !ok {
		if d.ft.len() >= d.cfg.MaxFlows {
			d.dropFlow(d.ft.victim())
			d.stats.FlowsEvicted++
		}
		i = d.ft.insert(flow, flowState{node: node, sndNxt: seg.Seq, srvAck: seg.Seq})
	}
	f := &d.ft.ents[i].st
	f.last = d.now
	f.lastClient = d.now
	ns := &d.nodes[node]
	syn := seg.Flags&header.TCPFlagSyn != 0
	l := seg.Len
	if syn {
		l++
	}
	if seg.Flags&header.TCPFlagFin != 0 {
		l++
	}
	if l > 0 {
		end := seg.Seq.Add(seqnum.Size(l))
		if syn && d.cfg.Mode != Paper {
			// The handshake is no evidence outside Paper mode: a client can
			// send SYNs at will, and a SYN retransmitted inside the
			// handshake RTT is not a loss. The SYN counts as acknowledged.
			if f.srvAck.LessThan(end) {
				f.srvAck = end
			}
		} else if ok && seg.Seq.LessThan(f.sndNxt) && !f.srvSince && ns.up {
			// Algorithm 1: a duplicate client segment, and the server has
			// sent nothing on this flow since.
			d.countDup(node, f, seg.Client)
		}
		f.srvSince = false
		if f.sndNxt.LessThan(end) {
			f.sndNxt = end
		}
	}
	d.setOutstanding(f, f.srvAck.LessThan(f.sndNxt))
	d.ft.touch(i)
	if d.cfg.Mode == Fast {
		d.checkSilence(f)
	}
	return d.out
}

// ServerSegment observes a segment from node on flow. Any packet from the
// server resets its Algorithm 1 count; any packet but a RST is evidence
// that the node is alive.
func (d *Detector[K]) ServerSegment(now time.Time, flow K, node NodeID, seg Segment) []Decision {
	d.advance(now)
	d.stats.ServerSegments++
	if !d.validNode(node) || seg.Len < 0 {
		d.stats.BadInput++
		return d.out
	}
	ns := &d.nodes[node]
	ns.heardServer()
	ns.lastServer = d.now
	if seg.Flags&header.TCPFlagRst == 0 {
		ns.heard = d.now
	}
	i, ok := d.ft.lookup(flow)
	if !ok || d.ft.ents[i].st.node != node {
		return d.out
	}
	f := &d.ft.ents[i].st
	f.last = d.now
	f.srvSince = true
	f.srvSeen = true
	if seg.Len > 0 && seg.Flags&header.TCPFlagRst == 0 {
		end := seg.Seq.Add(seqnum.Size(seg.Len))
		if !f.srvData || f.srvNxt.LessThan(end) {
			f.srvData, f.srvNxt = true, end
			d.refuteMisses(ns)
		}
	}
	if seg.Flags&header.TCPFlagAck != 0 {
		if f.srvAck.LessThan(seg.Ack) {
			f.srvAck = seg.Ack
		}
		if f.sndNxt.LessThan(f.srvAck) {
			f.sndNxt = f.srvAck // we missed client segments
		}
	}
	d.setOutstanding(f, f.srvAck.LessThan(f.sndNxt))
	d.ft.touch(i)
	return d.out
}

// FlowEnded forgets flow (closed, reset, or moved away by the caller).
func (d *Detector[K]) FlowEnded(flow K) {
	if i, ok := d.ft.lookup(flow); ok {
		d.dropFlow(i)
	}
}

// BranchLag reports that node's branch of a forked flow has lagged the
// other branches' acknowledgement since since, while client data is
// outstanding; a zero since clears the lag. flow must be the key the
// branch's client segments were reported with.
func (d *Detector[K]) BranchLag(now time.Time, flow K, node NodeID, since time.Time) []Decision {
	d.advance(now)
	if !d.validNode(node) {
		d.stats.BadInput++
		return d.out
	}
	i, ok := d.ft.lookup(flow)
	if !ok || d.ft.ents[i].st.node != node {
		return d.out // untracked flow: nothing to attach the lag to
	}
	f := &d.ft.ents[i].st
	if since.After(d.now) {
		since = d.now
	}
	was, is := !f.lagSince.IsZero(), !since.IsZero()
	ns := &d.nodes[node]
	switch {
	case is && !was:
		ns.lagging++
		d.lagTotal++
	case was && !is:
		ns.lagging--
		d.lagTotal--
	}
	f.lagSince = since
	if is && d.cfg.Mode == Fast {
		d.checkLag(node, since)
	}
	return d.out
}

// Probe observes the result of an active probe of node. In both modes it
// drives readmission of a down node; in Fast mode failed or not-ready
// probes also declare nodes down.
func (d *Detector[K]) Probe(now time.Time, node NodeID, r ProbeResult) []Decision {
	d.advance(now)
	d.stats.Probes++
	if !d.validNode(node) || r.RTT < 0 {
		d.stats.BadInput++
		return d.out
	}
	ns := &d.nodes[node]
	ns.probed = true
	if r.OK {
		// Evidence of life for the silence and ack-lag rules, but not a
		// reset of Algorithm 1: that counts the data path only, exactly as
		// in Paper mode, so Fast detects everything Paper does (a data path
		// broken while probes still pass, for one).
		ns.heard = d.now
		if r.RTT > 0 {
			ns.sampleRTT(r.RTT)
		}
	}
	good := r.OK && r.Ready
	if good {
		ns.misses = 0
		if ns.readySince.IsZero() {
			ns.readySince = d.now
		}
	} else {
		if ns.misses == 0 {
			ns.missSince, ns.missNotReady = d.now, false
		}
		ns.misses++
		ns.missNotReady = ns.missNotReady || r.OK
		ns.readySince = time.Time{}
	}
	if !ns.up {
		d.checkReadmit(node)
		return d.out
	}
	if (d.cfg.Mode != Fast && d.cfg.Mode != Safe) || good {
		return d.out
	}
	if d.cfg.Mode == Safe && ns.dups > 0 {
		d.checkDups(node) // a failing probe confirms passive evidence
		if !ns.up {
			return d.out
		}
	}
	if ns.misses >= d.cfg.ProbeMisses {
		cause := fmt.Sprintf("%d probes missed", ns.misses)
		if r.OK {
			cause = fmt.Sprintf("%d probes missed (last: reachable but not ready)", ns.misses)
		}
		d.markDown(node, SignalProbes, cause)
		return d.out
	}
	if ns.misses >= d.cfg.DCProbeMisses {
		d.checkDCProbes(ns.info.DC)
	}
	return d.out
}

// Tick advances time: it applies the time-based rules (silence, ack lag,
// readmission) and forgets idle flows. Call it at a short interval (for
// example every 10-50 ms) and after a batch of observations.
func (d *Detector[K]) Tick(now time.Time) []Decision {
	d.advance(now)
	suspects := 0
	for i := range d.nodes {
		ns := &d.nodes[i]
		ns.suspect = false
		if !ns.up {
			d.checkReadmit(NodeID(i))
			continue
		}
		if (d.cfg.Mode == Fast || d.cfg.Mode == Safe) && ns.dups >= d.cfg.Threshold {
			d.checkDups(NodeID(i))
			if !ns.up {
				continue
			}
		}
		// Every flow's silence starts no earlier than the node's, so
		// only a node that is silent as a whole needs its flows checked.
		if d.cfg.Mode == Fast && ns.outstanding > 0 &&
			d.now.Sub(later(ns.outSince, ns.heard)) >= d.SilenceThreshold(NodeID(i)) {
			ns.suspect = true
			suspects++
		}
	}
	if d.cfg.Mode == Fast && (suspects > 0 || d.lagTotal > 0) {
		for i := range d.ft.ents {
			f := &d.ft.ents[i].st
			if !d.ft.ents[i].used || !d.nodes[f.node].up {
				continue
			}
			if d.nodes[f.node].suspect {
				d.checkSilence(f)
			}
			if !f.lagSince.IsZero() {
				d.checkLag(f.node, f.lagSince)
			}
		}
	}
	if d.now.Sub(d.lastGC) >= time.Second {
		d.lastGC = d.now
		for i := range d.ft.ents {
			if d.ft.ents[i].used && d.now.Sub(d.ft.ents[i].st.last) >= d.cfg.FlowIdle {
				d.dropFlow(int32(i))
				d.stats.FlowsExpired++
			}
		}
	}
	return d.out
}

// refuteMisses ends ns's streak of failed probes when the node has just
// sent a new reply on the data path: bytes beyond any it sent before on a
// flow, which only its server process produces (a stopped process's
// kernel still acknowledges and answers keepalives, but sends no new
// payload). Probes that time out while the node keeps replying say more
// about the probe path, a starved prober above all, than about the node;
// counting them took a live DC down under CPU load, the survivor of a
// cut included. A streak with a "not ready" answer stands: the node said
// so itself. Only a reply observed after the streak's first miss counts,
// so a cut node's last replies in flight cannot refute it.
func (d *Detector[K]) refuteMisses(ns *nodeState) {
	if ns.misses == 0 || ns.missNotReady || !ns.up || d.cfg.Mode == Paper || !d.now.After(ns.missSince) {
		return
	}
	ns.misses = 0
	d.stats.ProbeStreaksRefuted++
}

// rto is the retransmission timeout a TCP stack would use towards ns.
func (d *Detector[K]) rto(ns *nodeState) time.Duration {
	return ns.srtt + max(4*ns.rttvar, d.cfg.MinRTO)
}

// SilenceThreshold returns how long node n must stay silent with
// unacknowledged client data before the silence rule declares it down:
// max(SilenceTimeout, srtt+4*rto).
func (d *Detector[K]) SilenceThreshold(n NodeID) time.Duration {
	if !d.validNode(n) {
		return 0
	}
	ns := &d.nodes[n]
	return max(d.cfg.SilenceTimeout, ns.srtt+4*d.rto(ns))
}

// AckLagThreshold returns how long node n's branch may lag the others
// before the ack-lag rule declares it down: max(AckLagTimeout, srtt+2*rto).
func (d *Detector[K]) AckLagThreshold(n NodeID) time.Duration {
	if !d.validNode(n) {
		return 0
	}
	ns := &d.nodes[n]
	return max(d.cfg.AckLagTimeout, ns.srtt+2*d.rto(ns))
}

// checkDups applies Algorithm 1 to node n. Paper mode: the threshold
// alone, and, as in the paper (whose action is to rewrite the service to
// the alternative DC and reset every affected connection), the node's
// whole DC is declared down: otherwise clients reset off one node would
// reconnect to its DC's next node and detection would have to repeat for
// each of them. Fast mode adds a guard against random loss on a busy node: the
// server must also have sent nothing on any flow for the silence
// threshold, twice that if its probes still pass (a live node's other
// flows keep talking; a dead one, or one whose data path is broken while
// its probes pass, does not).
func (d *Detector[K]) checkDups(n NodeID) {
	ns := &d.nodes[n]
	if !ns.up || ns.dups < d.cfg.Threshold {
		return
	}
	if d.cfg.Mode == Paper {
		d.markDCDown(ns.info.DC, SignalDuplicates, fmt.Sprintf("paper: %d duplicate client segments to node %v", ns.dups, ns.info.Addr))
		return
	}
	if d.cfg.Mode == Safe {
		d.checkCorroborated(n)
		return
	}
	if ns.lastServer.IsZero() {
		d.markDown(n, SignalDuplicates, fmt.Sprintf("paper: %d duplicate client segments, never a packet from the server", ns.dups))
		return
	}
	need := d.SilenceThreshold(n)
	if ns.heard.After(ns.lastServer) {
		need *= 2 // its probes pass: ask the data path for longer evidence
	}
	if quiet := d.now.Sub(ns.lastServer); quiet >= need {
		d.markDown(n, SignalDuplicates, fmt.Sprintf("paper: %d duplicate client segments, no packet from the server for %v", ns.dups, quiet.Round(time.Millisecond)))
	}
}

// checkSilence applies the silence rule to flow f: its client data is
// unacknowledged, nothing has been heard from the node since it was sent
// for the threshold, and the client is still (re)transmitting: it sent
// within the last half threshold (TCP's backoff retransmits at 3*rto, well
// within; a flow whose client went away is not evidence).
func (d *Detector[K]) checkSilence(f *flowState) {
	ns := &d.nodes[f.node]
	if !ns.up || !f.outstanding {
		return
	}
	thr := d.SilenceThreshold(f.node)
	silent := d.now.Sub(later(f.outSince, ns.heard))
	if silent < thr || d.now.Sub(f.lastClient) > thr/2 {
		return
	}
	d.markDown(f.node, SignalSilence, fmt.Sprintf("silence %v with unacknowledged client data", silent.Round(time.Millisecond)))
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// checkLag applies the ack-lag rule to node n for a branch lagging since
// since: the lag and the node's silence since it began exceed the
// threshold.
func (d *Detector[K]) checkLag(n NodeID, since time.Time) {
	ns := &d.nodes[n]
	if !ns.up {
		return
	}
	lag := d.now.Sub(later(since, ns.heard))
	if lag < d.AckLagThreshold(n) {
		return
	}
	d.markDown(n, SignalAckLag, fmt.Sprintf("ack lag %v behind the other branches, nothing heard since", d.now.Sub(since).Round(time.Millisecond)))
}

// checkDCProbes applies the correlated probe rule to dc.
func (d *Detector[K]) checkDCProbes(dc DCID) {
	ds := &d.dcs[dc]
	if ds.live < 2 {
		return
	}
	for _, n := range ds.nodes {
		if d.nodes[n].up && d.nodes[n].misses < d.cfg.DCProbeMisses {
			return
		}
	}
	d.markDCDown(dc, SignalDCProbes, fmt.Sprintf("all %d live nodes of DC %s missed %d+ probes", ds.live, ds.name, d.cfg.DCProbeMisses))
}

// markDCDown declares every live node of dc down with one cause.
func (d *Detector[K]) markDCDown(dc DCID, sig Signal, cause string) {
	for _, n := range d.dcs[dc].nodes {
		if d.nodes[n].up {
			d.markDown(n, sig, cause)
		}
	}
}

// checkReadmit brings down node n back once it has been ready for
// ReadmitAfter.
func (d *Detector[K]) checkReadmit(n NodeID) {
	ns := &d.nodes[n]
	if ns.up || ns.readySince.IsZero() {
		return
	}
	if ready := d.now.Sub(ns.readySince); ready >= d.cfg.ReadmitAfter {
		d.markUp(n, fmt.Sprintf("ready for %v", ready.Round(time.Millisecond)))
	}
}

func (d *Detector[K]) setOutstanding(f *flowState, v bool) {
	if f.outstanding == v {
		return
	}
	ns := &d.nodes[f.node]
	if v {
		if ns.outstanding == 0 {
			ns.outSince = d.now
		}
		ns.outstanding++
		f.outSince = d.now
	} else {
		ns.outstanding--
	}
	f.outstanding = v
}

func (d *Detector[K]) dropFlow(i int32) {
	f := &d.ft.ents[i].st
	d.setOutstanding(f, false)
	if !f.lagSince.IsZero() {
		d.nodes[f.node].lagging--
		d.lagTotal--
	}
	d.ft.remove(i)
}

// sampleRTT folds an RTT sample into the node's estimate (RFC 6298).
func (ns *nodeState) sampleRTT(rtt time.Duration) {
	rtt = min(rtt, maxRTT)
	if !ns.haveRTT {
		ns.haveRTT = true
		ns.srtt = rtt
		ns.rttvar = rtt / 2
		return
	}
	delta := ns.srtt - rtt
	if delta < 0 {
		delta = -delta
	}
	ns.rttvar = (3*ns.rttvar + delta) / 4
	ns.srtt = (7*ns.srtt + rtt) / 8
}
