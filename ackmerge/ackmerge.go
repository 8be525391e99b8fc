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
// off_k = iss_k - iss_ref. Client payload is never buffered; of the
// reply, only the first Config.HoldBytes bytes past the forwarded stream
// are copied, so that a branch removal delivers them at once (hold.go). A
// branch's coverage is the highest reply byte it has sent (a
// TCP sender sends in order, so a segment past a hole proves the bytes in
// the hole were sent and lost on the way); bytes below the minimum
// coverage are forwarded from whichever segment carries them, trimmed,
// even out of order: the client reassembles, and its duplicate ACKs make
// the branches retransmit any hole. Departures from the paper's forking,
// each covered by a rule test: the coverage above (dropping out-of-order
// reply segments instead costs one RTT per lost segment under loss), a
// repeated ACK when the client retransmits acknowledged bytes or a branch
// retransmits bytes the client acknowledged, optional SACK (Config.SACK),
// and held reply bytes (Config.HoldBytes).
//
// Wiring (the middlebox): NewFlow on the client's SYN; Step for every
// packet of the connection with the side it came from; Tick about every
// 100 ms; write every Out.Pkts[i].Buf at Out.Offset; count EvEstablished
// (forks), EvBranchRemoved (shrinks; divergences when Cause is
// CauseDivergence; a DC whose reply bytes differ, from Event.Offset on,
// when Cause is CauseReplyMismatch: verify.go), EvClientReset; drop the
// flow on EvDone. RemoveBranch
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
	"net/netip"
	"time"
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
	// NoVerify turns reply verification off (verify.go): by default the
	// branches' reply bytes are compared by hash and a branch that sends
	// other bytes than the majority is removed (CauseReplyMismatch).
	NoVerify bool
	// HoldBytes is how many reply bytes past the forwarded stream a flow
	// keeps (copied from the first branch that sends them) so that a
	// branch removal delivers them at once instead of leaving them to the
	// survivors' retransmission timers (hold.go; default DefaultHoldBytes,
	// negative: none).
	HoldBytes int
}

// DefaultHoldBytes is Config.HoldBytes's default.
const DefaultHoldBytes = 8 << 10

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
	if c.HoldBytes == 0 {
		c.HoldBytes = DefaultHoldBytes
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
	CauseReplyMismatch          // its reply bytes differ from the majority's (verify.go)
)

var causeNames = [...]string{"none", "rst", "lagged", "handshake-timeout", "divergence", "failover", "min-replicas", "idle", "closed", "reply-mismatch"}

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
	// divergence when Cause is CauseDivergence; different reply bytes,
	// from reply offset Offset on, when Cause is CauseReplyMismatch).
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
	// Offset, for CauseReplyMismatch: the reply stream offset (bytes
	// after the SYN, as the client counts them, modulo nothing) from
	// which the branch's bytes were found to differ: the start of the
	// range whose hashes differed (the ranges before it agreed or were
	// not comparable).
	Offset uint64
	// Peer, for CauseReplyMismatch: a branch whose bytes won the vote (to
	// show next to the removed one's, Flow.ReplyTail).
	Peer int
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

	// Reply verification (verify.go).
	RepliesVerified   uint64 // comparison points where every live branch's hash agreed
	RepliesUnverified uint64 // chunks some live branch could not hash (a hole) or compare (too far behind)
	ReplyMismatches   uint64 // comparison points whose hashes differed
	HeldSent          uint64 // held reply bytes sent to the client on a removal
	HoldFull          uint64 // reply segments past the held bytes not kept (hold full)
}
