// Package ackmerge is the pure state machine of one forked TCP connection
// (docs/design.md section 4; the paper's section 3.2, SDN-multicast): one
// client talks to a virtual address, and every segment it sends is copied
// to one node in each live datacentre (a branch); the branches' replies
// are merged so that the client is acknowledged only what every live
// branch has acknowledged and receives only reply bytes that every live
// branch has sent.
//
//	client ──Step(from=ToClient)──► copy per live branch: dst=node, ack+=off_k ──► branches
//	branch k ──Step(from=k)──► seq-=off_k, ack=min acked, window=min edge,
//	                           payload trimmed to [client acked, min covered) ──► client
//	clock ──Tick──► handshake timeout, lagging branches, linger, idle
//
// All numbers the client sees are in the sequence space of the reference
// branch (the first to answer the SYN); branch k's offset is
// off_k = iss_k - iss_ref. Neither client nor reply payload is ever
// buffered. A branch's coverage is the highest reply byte it has sent (a
// TCP sender sends in order, so a segment past a hole proves the bytes in
// the hole were sent and lost on the way); bytes below the minimum
// coverage are forwarded from whichever segment carries them, trimmed,
// even out of order: the client reassembles, and its duplicate ACKs make
// the branches retransmit any hole. Departures from the paper's forking,
// each covered by a rule test: the coverage above (dropping out-of-order
// reply segments instead costs one RTT per lost segment under loss), a
// repeated ACK when the client retransmits acknowledged bytes or a branch
// retransmits bytes the client acknowledged, and optional SACK
// (Config.SACK).
//
// Wiring (the middlebox): NewFlow on the client's SYN; Step for every
// packet of the connection with the side it came from; Tick about every
// 100 ms; write every Out.Pkts[i].Buf at Out.Offset; count EvEstablished
// (forks), EvBranchRemoved (shrinks; divergences when Cause is
// CauseDivergence), EvClientReset; drop the flow on EvDone. RemoveBranch
// is the failover component's hook. Branch and Stats feed /flows.
//
// The package does no I/O, starts no goroutines and never reads the wall
// clock: packets and the time come in through Step and Tick, packets to send
// and events go out through a caller-owned Out. A Flow is not safe for
// concurrent use; the driver calls it from one goroutine (or under a lock).
//
// Packet buffers follow the netstackio Device convention: an IP packet sits
// at buf[Out.Offset:] with its 10-byte virtio-net header directly in front
// of it, at buf[Out.Offset-10:Out.Offset]. Offload super-packets (GSO,
// partial checksums) are handled: every rewrite goes through
// netstackio/packet, and copies keep the virtio-net header.
package ackmerge

import (
	"errors"
	"net/netip"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// ToClient is the destination (Emit.To) and source (Step's from) index of
// the client side; branches are numbered 0..n-1.
const ToClient = -1

// Target is the node a branch goes to: the address and port its packets are
// rewritten to, and the index of its datacentre (informational).
type Target struct {
	Addr netip.AddrPort
	DC   int
	// MTU of the path to this node, if known (0: not known). MSS options
	// in both directions of the handshake are clamped to fit it.
	MTU int
}

// mssLimit is the largest MSS that fits the target's path MTU (0: none).
func (t Target) mssLimit() uint16 {
	if t.MTU <= 0 {
		return 0
	}
	h := 40
	if t.Addr.Addr().Is6() {
		h = 60
	}
	return uint16(max(t.MTU-h, 536))
}

// Config holds a flow's policy. Zero fields take their defaults.
type Config struct {
	// MinReplicas is the fewest live branches a connection may run on;
	// below it the client gets a RST (default 1).
	MinReplicas int
	// HandshakeTimeout: branches that have not answered the SYN this long
	// after the client's first SYN are dropped (default 3s).
	HandshakeTimeout time.Duration
	// BranchTimeout: a branch that lags the others (acknowledges or sends
	// less) without progress for this long is removed (default 10s).
	BranchTimeout time.Duration
	// Linger is how long a closed or reset flow stays to absorb late
	// retransmissions before EvDone (default 2s).
	Linger time.Duration
	// IdleTimeout ends a flow with no packet for this long (0: never; the
	// driver's flow table usually has its own).
	IdleTimeout time.Duration
	// SACK keeps selective acknowledgements for the client's data (beyond
	// the paper, which disables SACK): SACK-permitted is passed on in the
	// handshake and offered to the client when every branch agreed, and
	// the slowest branch's SACK blocks (client sequence space, so no
	// translation) reach the client with its duplicate ACKs; blocks from
	// other branches, and the client's own blocks about reply bytes, are
	// NOP-ed out. Timestamps are always removed.
	SACK bool
}

func (c *Config) defaults() {
	if c.MinReplicas <= 0 {
		c.MinReplicas = 1
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 3 * time.Second
	}
	if c.BranchTimeout <= 0 {
		c.BranchTimeout = 10 * time.Second
	}
	if c.Linger <= 0 {
		c.Linger = 2 * time.Second
	}
}

// Cause says why a branch was removed or a flow ended.
type Cause uint8

// Causes.
const (
	CauseNone             Cause = iota
	CauseRST                    // the branch (or the client) sent RST
	CauseLagged                 // lagged the others past BranchTimeout
	CauseHandshakeTimeout       // never answered the SYN in time
	CauseDivergence             // its reply stream provably differs
	CauseFailover               // removed by RemoveBranch (DC declared dead)
	CauseMinReplicas            // too few branches left: client reset
	CauseIdle                   // no packet for IdleTimeout
	CauseClosed                 // both directions closed and acknowledged
)

var causeNames = [...]string{"none", "rst", "lagged", "handshake-timeout", "divergence", "failover", "min-replicas", "idle", "closed"}

func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return "unknown"
}

// EventKind is the kind of an Event.
type EventKind uint8

// Event kinds.
const (
	// EvEstablished: every branch answered (or the handshake timeout
	// dropped the silent ones) and the SYN-ACK went to the client: one fork.
	EvEstablished EventKind = iota + 1
	// EvBranchRemoved: Branch left the flow for Cause (a shrink; a
	// divergence when Cause is CauseDivergence).
	EvBranchRemoved
	// EvClientReset: the client was sent a RST (fewer than MinReplicas
	// branches left, Cause says why).
	EvClientReset
	// EvDone: the flow is over; the driver removes it. Cause says why.
	EvDone
)

func (k EventKind) String() string {
	switch k {
	case EvEstablished:
		return "established"
	case EvBranchRemoved:
		return "branch-removed"
	case EvClientReset:
		return "client-reset"
	case EvDone:
		return "done"
	}
	return "unknown"
}

// Event is something the driver must know about (metrics, table cleanup).
type Event struct {
	Kind   EventKind
	Branch int // for EvBranchRemoved, else -1
	Cause  Cause
}

// Emit is one packet to send. Buf is ready for Device.Write at Out.Offset:
// Buf[Out.Offset:] is the IP packet and the virtio-net header precedes it.
// To is ToClient or a branch index (the packet's addresses are already
// rewritten; To is for the driver's accounting and for tests).
// InPlace reports that Buf aliases the input buffer given to Step (advanced
// by a trim shift); otherwise Buf came from Out.Alloc.
type Emit struct {
	To      int
	Buf     []byte
	InPlace bool
}

// Out is a caller-owned, reusable batch of output. The caller sets Offset
// and Alloc once, calls Reset before (or after) each batch, and writes the
// Pkts it finds after Step/Tick/RemoveBranch. Appending reuses the slices'
// capacity, so a batch that is reset allocates nothing in steady state.
type Out struct {
	// Offset is the position of IP packets in buffers, at least
	// virtio.HdrLen (the virtio-net header sits right before).
	Offset int
	// Alloc returns a buffer of at least n bytes, owned by the caller, or
	// nil when none is available (the copy is then dropped and counted).
	// Called for each extra copy of a client segment and for packets the
	// flow makes itself (SYN-ACK, RST, pure ACK).
	Alloc func(n int) []byte

	Pkts   []Emit
	Events []Event
}

// Reset empties the batch, keeping capacity.
func (o *Out) Reset() {
	clear(o.Pkts)
	o.Pkts = o.Pkts[:0]
	o.Events = o.Events[:0]
}

// State is a flow's phase.
type State uint8

// States.
const (
	StateNew         State = iota // no client SYN yet
	StateSynSent                  // SYN forked, waiting for branches
	StateEstablished              // data flows
	StateLinger                   // both sides closed; absorbing retransmits
	StateReset                    // client reset; answering with RSTs
	StateDone                     // over
)

var stateNames = [...]string{"new", "syn-sent", "established", "linger", "reset", "done"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Stats are a flow's counters. All fields only grow.
type Stats struct {
	FromClient   uint64 // segments from the client
	FromBranches uint64 // segments from branches
	ToBranches   uint64 // segments emitted to branches (copies included)
	ToClient     uint64 // segments emitted to the client
	Merged       uint64 // branch segments absorbed into the merge (not forwarded)
	DupAcks      uint64 // duplicate ACKs of the slowest branch passed on
	Trimmed      uint64 // reply segments forwarded trimmed
	OutOfOrder   uint64 // branch segments past a hole in the branch's stream
	Invalid      uint64 // malformed or impossible segments dropped
	AllocFail    uint64 // copies dropped because Alloc returned nil
	Shrinks      uint64 // branches removed
	Divergences  uint64 // of which for divergence
}

type branch struct {
	t        Target
	answered bool // SYN-ACK seen
	removed  bool
	cause    Cause

	iss    seqnum.Value // branch's ISS (its own space)
	off    seqnum.Size  // iss - issRef
	mss    uint16
	ws     uint8 // effective shift of the branch's windows
	wsOK   bool  // window scaling in effect with this branch
	synWnd uint16
	sackOK bool // its SYN-ACK permitted SACK
	sack   [maxSACK]sackBlock
	nsack  int

	acked seqnum.Value // highest ack of the client stream
	edge  seqnum.Value // acked + window
	wl1   seqnum.Value // seq (ref space) of the segment that set edge
	cov   seqnum.Value // end of the reply bytes it has sent (ref space)
	fin   bool
	finAt seqnum.Value // FIN's sequence number (ref space)

	ackedBytes, covBytes uint64
	behindSince          time.Time
}

// coverFin is the branch's coverage in sequence space, its FIN included.
func (b *branch) coverFin() seqnum.Value {
	if b.fin {
		return b.cov.Add(1)
	}
	return b.cov
}

// Flow is one forked connection. Not safe for concurrent use.
type Flow struct {
	cfg    Config
	client netip.AddrPort
	vip    netip.AddrPort
	br     []branch
	live   int
	nans   int // live branches that answered
	state  State
	cause  Cause

	cliISS   seqnum.Value
	cliNxt   seqnum.Value // highest client seq + len seen
	cliFin   bool
	cliFinAt seqnum.Value
	cliWSOK  bool
	cliWS    uint8
	cliWnd   uint16 // the client's last window field
	cliSACK  bool   // the client offered SACK and Config.SACK is on
	sackOK   bool   // SACK in effect with the client
	facingWS uint8  // shift of the windows we advertise to the client

	issRef   seqnum.Value
	haveRef  bool
	sndNxt   seqnum.Value // highest seq+len sent to the client (ref space)
	cliAcked seqnum.Value // highest ack from the client (ref space)
	sentAck  seqnum.Value // last ack sent to the client
	sentEdge seqnum.Value // last right edge advertised to the client
	finSent  bool
	fins     int // branches that sent their FIN

	// merged values, recomputed on every change
	minAck, minEdge, minCov seqnum.Value
	coverEnd                seqnum.Value // minCov, +1 when every branch's FIN is covered
	minHolder               int

	synAt, last, doneAt time.Time
	stats               Stats
}

// Errors from NewFlow.
var (
	ErrNoBranches = errors.New("ackmerge: no branches")
	ErrFamily     = errors.New("ackmerge: client, VIP and branches must share one IP family")
)

// NewFlow makes the state of one forked connection from client to vip,
// forked to branches (at most one per DC). The flow starts with the client's
// SYN, given to Step.
func NewFlow(cfg Config, client, vip netip.AddrPort, branches []Target) (*Flow, error) {
	if len(branches) == 0 {
		return nil, ErrNoBranches
	}
	v4 := client.Addr().Is4()
	if vip.Addr().Is4() != v4 {
		return nil, ErrFamily
	}
	for _, b := range branches {
		if b.Addr.Addr().Is4() != v4 {
			return nil, ErrFamily
		}
	}
	cfg.defaults()
	f := &Flow{cfg: cfg, client: client, vip: vip, br: make([]branch, len(branches)), live: len(branches), minHolder: -1}
	for i, t := range branches {
		f.br[i].t = t
	}
	return f, nil
}

// --- read-only state (for /flows and tests) --------------------------------

// BranchInfo is a snapshot of one branch.
type BranchInfo struct {
	Target   Target
	Live     bool
	Answered bool
	Cause    Cause  // why it was removed
	Offset   uint32 // iss_k - iss_ref
	Acked    uint64 // client bytes this branch acknowledged
	Covered  uint64 // reply bytes this branch sent (contiguous)
	Window   uint32 // its current receive window in bytes
	FIN      bool   // it closed its side
}

// State returns the flow's phase.
func (f *Flow) State() State { return f.state }

// Cause returns why the flow reset or ended (CauseNone while running).
func (f *Flow) Cause() Cause { return f.cause }

// Client and VIP return the connection's client-visible endpoints.
func (f *Flow) Client() netip.AddrPort { return f.client }
func (f *Flow) VIP() netip.AddrPort    { return f.vip }

// NumBranches returns the number of branches, live or not.
func (f *Flow) NumBranches() int { return len(f.br) }

// Live returns the number of live branches.
func (f *Flow) Live() int { return f.live }

// Branch returns a snapshot of branch k.
func (f *Flow) Branch(k int) BranchInfo {
	b := &f.br[k]
	return BranchInfo{
		Target: b.t, Live: !b.removed, Answered: b.answered, Cause: b.cause,
		Offset: uint32(b.off), Acked: b.ackedBytes, Covered: b.covBytes,
		Window: uint32(b.acked.Size(b.edge)), FIN: b.fin,
	}
}

// Acked returns the client bytes acknowledged to the client (by every live
// branch) and the reply bytes forwarded to the client, modulo 2^32.
func (f *Flow) Acked() (clientBytes, replyBytes uint32) {
	if f.state < StateEstablished {
		return 0, 0
	}
	return uint32(f.cliISS.Add(1).Size(f.sentAck)), uint32(f.issRef.Add(1).Size(f.sndNxt))
}

// Stats returns the flow's counters.
func (f *Flow) Stats() Stats { return f.stats }

// LastActivity is the time of the last Step.
func (f *Flow) LastActivity() time.Time { return f.last }

// --- input -------------------------------------------------------------------

// Step feeds one packet to the flow. from is ToClient or the index of the
// branch it came from (the driver maps the node's address:port to k).
//
// buf is the driver's buffer and p a parsed view of the packet in it:
// p.Buf must start at buf[out.Offset] and p.Vnet be buf[out.Offset-10:
// out.Offset]. The flow may rewrite buf in place and emit it (Emit.InPlace);
// the caller must then not reuse buf until that packet is written. If no
// Emit is InPlace, buf is free again when Step returns.
func (f *Flow) Step(buf []byte, p *packet.TCP, from int, now time.Time, out *Out) {
	if len(p.Buf) == 0 || out.Offset < virtio.HdrLen || len(buf) <= out.Offset || &buf[out.Offset] != &p.Buf[0] {
		f.stats.Invalid++
		return
	}
	f.last = now
	if from == ToClient {
		f.stats.FromClient++
		f.fromClient(buf, p, now, out)
		return
	}
	f.stats.FromBranches++
	if from < 0 || from >= len(f.br) {
		f.stats.Invalid++
		return
	}
	f.fromBranch(from, buf, p, now, out)
}

// Tick runs the timers: the handshake timeout, lagging branches, the end of
// the linger and the idle timeout. Call it periodically (e.g. every 100 ms
// for all flows) with the current time.
func (f *Flow) Tick(now time.Time, out *Out) {
	switch f.state {
	case StateDone, StateNew:
		return
	case StateLinger, StateReset:
		if !now.Before(f.doneAt) {
			f.finish(CauseNone, out)
		}
		return
	case StateSynSent:
		if now.Sub(f.synAt) >= f.cfg.HandshakeTimeout {
			for k := range f.br {
				if b := &f.br[k]; !b.removed && !b.answered {
					f.removeBranch(k, CauseHandshakeTimeout, now, out)
					if f.state != StateSynSent {
						return
					}
				}
			}
		}
	case StateEstablished:
		for k := range f.br {
			b := &f.br[k]
			if b.removed || b.behindSince.IsZero() || now.Sub(b.behindSince) < f.cfg.BranchTimeout {
				continue
			}
			f.removeBranch(k, CauseLagged, now, out)
			if f.state != StateEstablished {
				return
			}
		}
	}
	if f.cfg.IdleTimeout > 0 && now.Sub(f.last) >= f.cfg.IdleTimeout {
		f.finish(CauseIdle, out)
	}
}

// RemoveBranch removes branch k from the flow (the failover component
// declared its DC or node dead): the merged values are recomputed at once and
// the connection continues on the others, or the client is reset when fewer
// than MinReplicas remain. The branch gets a RST. No-op if already removed.
func (f *Flow) RemoveBranch(k int, cause Cause, now time.Time, out *Out) {
	if k < 0 || k >= len(f.br) || f.br[k].removed || f.state == StateDone {
		return
	}
	if cause == CauseNone {
		cause = CauseFailover
	}
	f.removeBranch(k, cause, now, out)
}

// --- client -> branches ----------------------------------------------------------

func (f *Flow) fromClient(buf []byte, p *packet.TCP, now time.Time, out *Out) {
	fl := p.Flags()
	switch {
	case f.state == StateDone:
		f.stats.Invalid++
		return
	case f.state == StateReset:
		// Answer with a RST the client accepts: its ack is its rcv.nxt.
		if fl&packet.FlagRST == 0 && fl&packet.FlagACK != 0 {
			f.sendRST(out, ToClient, f.vip, f.client, p.Ack(), uint32(f.sentAck), true)
		}
		return
	case fl&packet.FlagSYN != 0:
		if fl&(packet.FlagACK|packet.FlagRST|packet.FlagFIN) != 0 {
			f.stats.Invalid++
			return
		}
		seq := seqnum.Value(p.Seq())
		if f.state == StateNew {
			o, err := p.SynOptions()
			if err != nil {
				f.stats.Invalid++
				return
			}
			f.cliISS, f.cliNxt = seq, seq.Add(1)
			f.cliWSOK, f.cliWS = o.WSOK, o.WS
			f.cliSACK = o.SACKOK && f.cfg.SACK
			f.synAt = now
			f.state = StateSynSent
		} else if seq != f.cliISS {
			f.stats.Invalid++ // a different connection on the same tuple
			return
		}
		var err error
		if f.cfg.SACK {
			_, err = p.NopOptions(packet.OptTimestamps)
			if o, _ := p.SynOptions(); !o.SACKOK {
				f.cliSACK = false
			}
		} else {
			_, err = p.NopOptions(packet.OptSACKPermitted, packet.OptTimestamps)
		}
		if err != nil {
			f.stats.Invalid++
			return
		}
		f.fanOut(buf, p, true, out)
		return
	case f.state == StateNew:
		f.stats.Invalid++
		return
	case fl&packet.FlagRST != 0:
		// The client resets: pass it on to every branch that has a
		// connection, then the flow is over.
		if p.HeaderLen() > p.IPHeaderLen()+20 {
			p.NopOptions(packet.OptSACK, packet.OptTimestamps)
		}
		f.fanOut(buf, p, false, out)
		f.finish(CauseRST, out)
		return
	case f.state == StateSynSent:
		f.stats.Invalid++ // the client cannot have our SYN-ACK yet
		return
	case fl&packet.FlagACK == 0:
		f.stats.Invalid++
		return
	}
	seq := seqnum.Value(p.Seq())
	if end := seq.Add(seqnum.Size(p.SeqLen())); f.cliNxt.LessThan(end) {
		f.cliNxt = end
	}
	if fl&packet.FlagFIN != 0 && !f.cliFin {
		f.cliFin, f.cliFinAt = true, seq.Add(seqnum.Size(p.PayloadLen()))
	}
	if a := seqnum.Value(p.Ack()); f.cliAcked.LessThan(a) && a.LessThanEq(f.sndNxt) {
		f.cliAcked = a
	}
	f.cliWnd = p.Window()
	if p.HeaderLen() > p.IPHeaderLen()+20 {
		if _, err := p.NopOptions(packet.OptSACK, packet.OptTimestamps); err != nil {
			f.stats.Invalid++
			return
		}
	}
	if sl := p.SeqLen(); sl > 0 && seq.Add(seqnum.Size(sl)).LessThanEq(f.sentAck) {
		// A retransmission of bytes we acknowledged: our ACK was lost.
		// Repeat it at once, as a receiver does for an old segment.
		f.sentAck, f.sentEdge = f.minAck, f.minEdge
		f.build(out, ToClient, f.vip, f.client, uint32(f.sndNxt), uint32(f.minAck),
			packet.FlagACK, f.clientWindow(), nil)
	}
	f.fanOut(buf, p, false, out)
	f.checkClosed(now)
}

// fanOut copies the client segment p to every live branch (only those that
// answered, unless syn), rewriting each copy; the last copy reuses buf.
func (f *Flow) fanOut(buf []byte, p *packet.TCP, syn bool, out *Out) {
	last := -1
	for k := range f.br {
		if b := &f.br[k]; !b.removed && (syn || b.answered) {
			last = k
		}
	}
	if last < 0 {
		return
	}
	off := out.Offset
	src := buf[off-virtio.HdrLen : off+len(p.Buf)]
	for k := 0; k < last; k++ {
		b := &f.br[k]
		if b.removed || !(syn || b.answered) {
			continue
		}
		n := off + len(p.Buf)
		var dst []byte
		if out.Alloc != nil {
			dst = out.Alloc(n)
		}
		if len(dst) < n {
			f.stats.AllocFail++
			continue
		}
		dst = dst[:n]
		copy(dst[off-virtio.HdrLen:], src)
		var q packet.TCP
		if q.Parse(dst[off:], virtio.Hdr(dst[off-virtio.HdrLen:off])) != nil {
			f.stats.Invalid++
			continue
		}
		f.toBranch(&q, b, syn)
		out.Pkts = append(out.Pkts, Emit{To: k, Buf: dst})
		f.stats.ToBranches++
	}
	f.toBranch(p, &f.br[last], syn)
	out.Pkts = append(out.Pkts, Emit{To: last, Buf: buf[:off+len(p.Buf)], InPlace: true})
	f.stats.ToBranches++
}

// toBranch rewrites a client segment for branch b: destination, the ack
// into b's sequence space, and the window into b's view of the client's
// scale.
func (f *Flow) toBranch(q *packet.TCP, b *branch, syn bool) {
	q.SetDstAddr(b.t.Addr.Addr())
	q.SetDstPort(b.t.Addr.Port())
	if syn {
		if lim := b.t.mssLimit(); lim > 0 {
			if o, err := q.SynOptions(); err == nil && o.MSS > lim {
				q.SetMSS(lim)
			}
		}
		return
	}
	if q.Has(packet.FlagACK) {
		q.SetAck(q.Ack() + uint32(b.off))
	}
	if f.cliWSOK && !b.wsOK && f.cliWS > 0 {
		q.SetWindow(f.branchWindow(b, q.Window()))
	}
}

// branchWindow translates a client window field into branch b's view: the
// client scales its window by cliWS; a branch that did not agree to scaling
// reads the field as bytes.
func (f *Flow) branchWindow(b *branch, raw uint16) uint16 {
	if f.cliWSOK && !b.wsOK && f.cliWS > 0 {
		return uint16(min(uint32(raw)<<f.cliWS, 0xffff))
	}
	return raw
}

// --- branches -> client --------------------------------------------------------

func (f *Flow) fromBranch(k int, buf []byte, p *packet.TCP, now time.Time, out *Out) {
	b := &f.br[k]
	fl := p.Flags()
	if b.removed || f.state == StateReset || f.state == StateDone {
		// A branch we no longer follow: tell it to go away (its ack is
		// its rcv.nxt), unless it is a RST itself.
		if fl&packet.FlagRST == 0 && fl&packet.FlagACK != 0 && f.state != StateDone {
			f.sendRST(out, k, f.client, b.t.Addr, p.Ack(), 0, false)
		}
		f.stats.Merged++
		return
	}
	if fl&packet.FlagRST != 0 {
		if f.state == StateLinger {
			// Both directions are closed and acknowledged: a server
			// that already dropped its socket answers a late segment
			// with RST. Nothing failed; stop copying to it.
			b.removed, b.cause = true, CauseClosed
			f.live--
			f.nans--
			f.stats.Merged++
			return
		}
		f.removeBranch(k, CauseRST, now, out)
		return
	}
	if fl&packet.FlagSYN != 0 {
		f.synAck(k, p, now, out)
		return
	}
	if !b.answered || f.state != StateEstablished && f.state != StateLinger || fl&packet.FlagACK == 0 {
		f.stats.Invalid++
		return
	}

	// Acknowledgement of the client stream.
	a := seqnum.Value(p.Ack())
	if f.cliNxt.LessThan(a) {
		f.stats.Invalid++ // acknowledges bytes the client never sent
		return
	}
	seqC := seqnum.Value(p.Seq() - uint32(b.off))
	plen := p.PayloadLen()
	fin := fl&packet.FlagFIN != 0
	advanced := false
	if b.acked.LessThan(a) {
		b.ackedBytes += uint64(b.acked.Size(a))
		b.acked = a
		advanced = true
	}
	if f.sackOK && a == b.acked {
		b.recordSACK(p)
	}
	if a == b.acked && b.wl1.LessThanEq(seqC) {
		b.wl1 = seqC
		b.edge = a.Add(seqnum.Size(uint32(p.Window()) << b.ws))
	}

	// Reply bytes. A TCP sender sends its stream in order, so a branch
	// that sent byte x has sent every byte before it (the ones missing
	// here were lost on the way): coverage is the highest byte seen, and
	// a segment past a hole still proves what the branch has sent.
	end := seqC.Add(seqnum.Size(plen))
	if plen > 0 || fin {
		switch {
		case b.fin && b.finAt.LessThan(end):
			f.stats.Invalid++ // bytes after its own FIN
		default:
			if b.cov.LessThan(seqC) {
				f.stats.OutOfOrder++ // a hole before it: still forwarded
			}
			if b.cov.LessThan(end) {
				b.covBytes += uint64(b.cov.Size(end))
				b.cov = end
				advanced = true
			}
			if fin && end == b.cov && !b.fin {
				b.fin, b.finAt = true, end
				f.fins++
			}
		}
	}
	if f.fins > 0 {
		f.checkDivergence(now, out)
		if b.removed || f.state != StateEstablished && f.state != StateLinger {
			return
		}
	}
	f.recompute()
	f.updateLag(k, advanced, now)

	// What reaches the client: [max(seq, client acked), coverEnd).
	segEnd := end
	if fin {
		segEnd = end.Add(1)
	}
	lo := seqC
	if lo.LessThan(f.cliAcked) {
		lo = f.cliAcked
	}
	hi := segEnd
	if f.coverEnd.LessThan(hi) {
		hi = f.coverEnd
	}
	switch {
	case (plen > 0 || fin) && segEnd.LessThanEq(f.cliAcked) && segEnd.LessThanEq(f.coverEnd):
		// Wholly acknowledged by the client already, yet retransmitted:
		// this branch missed the client's ACK. Repeat that ACK to it (the
		// client may be gone already, e.g. after its TIME-WAIT).
		f.stats.Merged++
		f.build(out, k, f.client, b.t.Addr, uint32(f.cliNxt), uint32(f.cliAcked)+uint32(b.off),
			packet.FlagACK, f.branchWindow(b, f.cliWnd), nil)
	case lo.LessThan(hi):
		pEnd := hi
		if end.LessThan(pEnd) {
			pEnd = end
		}
		head := 0
		if seqC.LessThan(lo) {
			head = int(seqC.Size(lo))
		}
		if head > plen {
			head = plen
		}
		tail := int(pEnd.Size(end))
		keepFin := fin && hi == segEnd
		f.rewriteToClient(p, seqC, k)
		if fin && !keepFin && tail == 0 {
			p.SetFlags(p.Flags() &^ packet.FlagFIN)
		}
		shift, err := p.TrimPayload(head, tail)
		if err != nil {
			f.stats.Invalid++
			return
		}
		if head > 0 || tail > 0 {
			f.stats.Trimmed++
		}
		if f.sndNxt.LessThan(hi) {
			f.sndNxt = hi
		}
		if keepFin {
			f.finSent = true
		}
		f.emitInPlace(buf, shift, p, out)
	case f.sentAck.LessThan(f.minAck) || f.sentEdge.LessThan(f.minEdge):
		f.pureAckInPlace(buf, p, k, out)
	case plen == 0 && !fin && !advanced && a == b.acked && k == f.minHolder &&
		f.minAck == f.sentAck && f.minAck.LessThan(f.cliNxt):
		f.stats.DupAcks++
		f.pureAckInPlace(buf, p, k, out)
	default:
		f.stats.Merged++
	}
	f.checkClosed(now)
}

// rewriteToClient turns a branch segment into one from the VIP with the
// client-visible seq, the merged ack and window.
func (f *Flow) rewriteToClient(p *packet.TCP, seq seqnum.Value, k int) {
	p.SetSrcAddr(f.vip.Addr())
	p.SetSrcPort(f.vip.Port())
	p.SetSeq(uint32(seq))
	p.SetAck(uint32(f.minAck))
	p.SetWindow(f.clientWindow())
	if p.HeaderLen() > p.IPHeaderLen()+20 {
		if f.sackOK && k == f.minHolder && f.br[k].acked == f.minAck {
			// The slowest branch's SACK blocks, cut down to what every
			// live branch holds: what the client's fast recovery needs.
			p.NopOptions(packet.OptTimestamps)
			f.mergeSACK(p, k)
		} else {
			p.NopOptions(packet.OptSACK, packet.OptTimestamps)
		}
	}
	f.sentAck = f.minAck
	f.sentEdge = f.minEdge
}

// clientWindow is the merged window in the client-visible scale.
func (f *Flow) clientWindow() uint16 {
	w := uint32(f.minAck.Size(f.minEdge)) >> f.facingWS
	return uint16(min(w, 0xffff))
}

func (f *Flow) pureAckInPlace(buf []byte, p *packet.TCP, k int, out *Out) {
	f.rewriteToClient(p, f.sndNxt, k)
	if p.Has(packet.FlagFIN) {
		p.SetFlags(p.Flags() &^ packet.FlagFIN)
	}
	if _, err := p.TrimPayload(0, p.PayloadLen()); err != nil {
		f.stats.Invalid++
		return
	}
	f.emitInPlace(buf, 0, p, out)
}

func (f *Flow) emitInPlace(buf []byte, shift int, p *packet.TCP, out *Out) {
	out.Pkts = append(out.Pkts, Emit{To: ToClient, Buf: buf[shift : out.Offset+shift+len(p.Buf)], InPlace: true})
	f.stats.ToClient++
}

// synAck handles a branch's SYN-ACK.
func (f *Flow) synAck(k int, p *packet.TCP, now time.Time, out *Out) {
	b := &f.br[k]
	if !p.Has(packet.FlagACK) || seqnum.Value(p.Ack()) != f.cliISS.Add(1) || f.state == StateNew {
		f.stats.Invalid++
		return
	}
	seq := seqnum.Value(p.Seq())
	if b.answered {
		f.stats.Merged++
		if seq != b.iss {
			f.stats.Invalid++
			return
		}
		// A retransmitted SYN-ACK: our SYN-ACK or the client's ACK was
		// lost. Answer for the flow once (from the first live branch).
		if (f.state == StateEstablished) && k == f.firstLive() {
			f.sendSynAck(out)
		}
		return
	}
	o, err := p.SynOptions()
	if err != nil || f.state != StateSynSent {
		f.stats.Invalid++
		return
	}
	b.answered = true
	b.iss = seq
	b.mss = o.MSS
	if lim := b.t.mssLimit(); lim > 0 && (b.mss == 0 || b.mss > lim) {
		b.mss = lim
	}
	b.wsOK = o.WSOK && f.cliWSOK
	if b.wsOK {
		b.ws = o.WS
	}
	b.synWnd = p.Window()
	b.sackOK = o.SACKOK
	if !f.haveRef {
		f.haveRef, f.issRef = true, seq
	}
	b.off = f.issRef.Size(seq)
	b.acked = f.cliISS.Add(1)
	b.edge = b.acked.Add(seqnum.Size(b.synWnd))
	b.cov = f.issRef.Add(1)
	b.wl1 = b.cov
	f.nans++
	f.stats.Merged++
	if f.nans == f.live {
		f.establish(now, out)
	}
}

// establish sends the one SYN-ACK to the client.
func (f *Flow) establish(now time.Time, out *Out) {
	if f.live < f.cfg.MinReplicas || f.live == 0 {
		f.resetClient(CauseMinReplicas, now, out)
		return
	}
	f.state = StateEstablished
	f.sndNxt = f.issRef.Add(1)
	f.cliAcked = f.sndNxt
	f.finSent = false
	if f.cliWSOK {
		var ws uint8
		for k := range f.br {
			if b := &f.br[k]; !b.removed && b.ws > ws {
				ws = b.ws
			}
		}
		f.facingWS = ws
	}
	f.sackOK = f.cliSACK
	for k := range f.br {
		if b := &f.br[k]; !b.removed && !b.sackOK {
			f.sackOK = false
		}
	}
	f.recompute()
	f.sentAck, f.sentEdge = f.minAck, f.minEdge
	f.sendSynAck(out)
	out.Events = append(out.Events, Event{Kind: EvEstablished, Branch: -1})
}

func (f *Flow) firstLive() int {
	for k := range f.br {
		if !f.br[k].removed {
			return k
		}
	}
	return -1
}

func (f *Flow) sendSynAck(out *Out) {
	var mss uint16 = 0xffff
	var wnd uint16 = 0xffff
	for k := range f.br {
		b := &f.br[k]
		if b.removed {
			continue
		}
		m := b.mss
		if m == 0 {
			m = 536
			if f.client.Addr().Is6() {
				m = 1220
			}
		}
		mss = min(mss, m)
		wnd = min(wnd, b.synWnd)
	}
	var opts [12]byte
	opts[0], opts[1] = packet.OptMSS, 4
	opts[2], opts[3] = byte(mss>>8), byte(mss)
	n := 4
	if f.cliWSOK {
		opts[n], opts[n+1], opts[n+2], opts[n+3] = packet.OptNOP, packet.OptWindowScale, 3, f.facingWS
		n += 4
	}
	if f.sackOK {
		opts[n], opts[n+1], opts[n+2], opts[n+3] = packet.OptNOP, packet.OptNOP, packet.OptSACKPermitted, 2
		n += 4
	}
	f.build(out, ToClient, f.vip, f.client, uint32(f.issRef), uint32(f.cliISS)+1,
		packet.FlagSYN|packet.FlagACK, wnd, opts[:n])
}

// --- merge, lag, divergence ----------------------------------------------------

// recompute the merged values over the live branches.
func (f *Flow) recompute() {
	first := true
	allFin := true
	f.minHolder = -1
	for k := range f.br {
		b := &f.br[k]
		if b.removed || !b.answered {
			continue
		}
		if first {
			f.minAck, f.minEdge, f.minCov = b.acked, b.edge, b.cov
			first = false
		} else {
			if b.acked.LessThan(f.minAck) {
				f.minAck = b.acked
			}
			if b.edge.LessThan(f.minEdge) {
				f.minEdge = b.edge
			}
			if b.cov.LessThan(f.minCov) {
				f.minCov = b.cov
			}
		}
		if !b.fin {
			allFin = false
		}
	}
	if first {
		return
	}
	for k := range f.br {
		if b := &f.br[k]; !b.removed && b.answered && b.acked == f.minAck {
			f.minHolder = k
			break
		}
	}
	f.coverEnd = f.minCov
	if allFin {
		// After checkDivergence, every live FIN sits at one offset.
		for k := range f.br {
			if b := &f.br[k]; !b.removed && b.answered {
				if b.finAt == f.minCov {
					f.coverEnd = f.minCov.Add(1)
				}
				break
			}
		}
	}
}

// updateLag tracks, per branch, since when it holds the others back (it
// has the lowest ack or coverage while some branch is ahead) without
// progress. Call after recompute.
func (f *Flow) updateLag(k int, progressed bool, now time.Time) {
	// Coverage counts the FIN: a branch whose FIN is missing while the
	// others closed holds the client's FIN back.
	var maxAck, maxCov, minCov seqnum.Value
	first := true
	for j := range f.br {
		b := &f.br[j]
		if b.removed || !b.answered {
			continue
		}
		c := b.coverFin()
		if first || maxAck.LessThan(b.acked) {
			maxAck = b.acked
		}
		if first || maxCov.LessThan(c) {
			maxCov = c
		}
		if first || c.LessThan(minCov) {
			minCov = c
		}
		first = false
	}
	for j := range f.br {
		b := &f.br[j]
		if b.removed || !b.answered {
			continue
		}
		behind := b.acked == f.minAck && f.minAck.LessThan(maxAck) ||
			b.coverFin() == minCov && minCov.LessThan(maxCov)
		switch {
		case !behind:
			b.behindSince = time.Time{}
		case b.behindSince.IsZero() || j == k && progressed:
			b.behindSince = now
		}
	}
}

// checkDivergence drops branches whose reply stream provably differs from
// the majority's: a FIN at another offset, or bytes past another's FIN.
func (f *Flow) checkDivergence(now time.Time, out *Out) {
	var f0 seqnum.Value
	any, conflict := false, false
	for k := range f.br {
		b := &f.br[k]
		if b.removed || !b.fin {
			continue
		}
		if !any {
			f0, any = b.finAt, true
		} else if b.finAt != f0 {
			conflict = true
		}
	}
	if !any {
		return
	}
	if !conflict {
		for k := range f.br {
			if b := &f.br[k]; !b.removed && b.answered && f0.LessThan(b.cov) {
				conflict = true
			}
		}
	}
	if !conflict {
		return
	}
	compatible := func(b *branch, end seqnum.Value) bool {
		if b.fin {
			return b.finAt == end
		}
		return b.cov.LessThanEq(end)
	}
	var best seqnum.Value
	bestScore := -1
	for j := range f.br {
		bj := &f.br[j]
		if bj.removed || !bj.fin {
			continue
		}
		score := 0
		for k := range f.br {
			if b := &f.br[k]; !b.removed && b.answered && compatible(b, bj.finAt) {
				score++
			}
		}
		if score > bestScore {
			best, bestScore = bj.finAt, score
		}
	}
	// A tie between two ends is decided by the branches that have not
	// closed yet; with none left, by the first live branch (the most
	// preferred DC).
	tie, undecided := false, false
	for j := range f.br {
		bj := &f.br[j]
		if bj.removed || !bj.answered {
			continue
		}
		if !bj.fin {
			undecided = true
			continue
		}
		if bj.finAt != best {
			score := 0
			for k := range f.br {
				if b := &f.br[k]; !b.removed && b.answered && compatible(b, bj.finAt) {
					score++
				}
			}
			tie = tie || score == bestScore
		}
	}
	if tie {
		if undecided {
			return
		}
		best = f.br[f.firstLive()].finAt
	}
	for k := range f.br {
		if b := &f.br[k]; !b.removed && b.answered && !compatible(b, best) {
			f.removeBranch(k, CauseDivergence, now, out)
			if f.state != StateEstablished && f.state != StateLinger {
				return
			}
		}
	}
}

// removeBranch takes k out of the flow and recomputes.
func (f *Flow) removeBranch(k int, cause Cause, now time.Time, out *Out) {
	b := &f.br[k]
	b.removed, b.cause = true, cause
	f.live--
	if b.answered {
		f.nans--
	}
	f.stats.Shrinks++
	if cause == CauseDivergence {
		f.stats.Divergences++
	}
	out.Events = append(out.Events, Event{Kind: EvBranchRemoved, Branch: k, Cause: cause})
	if cause != CauseRST && b.answered {
		f.sendRST(out, k, f.client, b.t.Addr, uint32(b.acked), 0, false)
	}
	switch f.state {
	case StateSynSent:
		if f.live < f.cfg.MinReplicas || f.live == 0 {
			f.resetClient(CauseMinReplicas, now, out)
		} else if f.nans == f.live {
			f.establish(now, out)
		}
	case StateEstablished, StateLinger:
		if f.live < f.cfg.MinReplicas || f.live == 0 {
			f.resetClient(CauseMinReplicas, now, out)
			return
		}
		f.recompute()
		for j := range f.br {
			f.br[j].behindSince = time.Time{}
		}
		f.updateLag(-1, false, now)
		if f.sentAck.LessThan(f.minAck) || f.sentEdge.LessThan(f.minEdge) {
			f.sentAck, f.sentEdge = f.minAck, f.minEdge
			f.build(out, ToClient, f.vip, f.client, uint32(f.sndNxt), uint32(f.minAck),
				packet.FlagACK, f.clientWindow(), nil)
		}
		f.checkClosed(now)
	}
}

// resetClient sends the client a RST it accepts and every live branch one.
func (f *Flow) resetClient(cause Cause, now time.Time, out *Out) {
	if f.state == StateSynSent {
		// The client is in SYN-SENT: a RST is accepted if it acks the SYN.
		f.sendRST(out, ToClient, f.vip, f.client, 0, uint32(f.cliISS)+1, true)
	} else {
		// Linux accepts a RST only at rcv.nxt exactly: the client's last
		// ack, or what we sent if it has not acked it all yet.
		f.sendRST(out, ToClient, f.vip, f.client, uint32(f.cliAcked), uint32(f.minAck), true)
		if f.sndNxt != f.cliAcked {
			f.sendRST(out, ToClient, f.vip, f.client, uint32(f.sndNxt), uint32(f.minAck), true)
		}
	}
	for k := range f.br {
		if b := &f.br[k]; !b.removed && b.answered {
			f.sendRST(out, k, f.client, b.t.Addr, uint32(b.acked), 0, false)
		}
	}
	f.state, f.cause = StateReset, cause
	f.doneAt = now.Add(f.cfg.Linger)
	out.Events = append(out.Events, Event{Kind: EvClientReset, Branch: -1, Cause: cause})
}

// checkClosed moves to linger once both directions are closed and
// acknowledged.
func (f *Flow) checkClosed(now time.Time) {
	if f.state != StateEstablished || !f.cliFin || !f.finSent {
		return
	}
	if f.cliFinAt.LessThan(f.minAck) && f.coverEnd.LessThanEq(f.cliAcked) {
		f.state = StateLinger
		f.doneAt = now.Add(f.cfg.Linger)
	}
}

func (f *Flow) finish(cause Cause, out *Out) {
	if f.state == StateDone {
		return
	}
	if cause == CauseNone {
		cause = f.cause
		if cause == CauseNone {
			cause = CauseClosed
		}
	}
	f.state, f.cause = StateDone, cause
	out.Events = append(out.Events, Event{Kind: EvDone, Branch: -1, Cause: cause})
}
