package ackmerge

import (
	"errors"
	"net/netip"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

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

	// Reply bytes past the forwarded stream, kept for a branch removal
	// (hold.go): held[heldOff:] is the stream from heldAt (reference space).
	held     []byte
	heldOff  int
	heldAt   seqnum.Value
	heldFrom int    // the branch the held bytes were copied from
	cliMSS   uint16 // the client's MSS: the largest segment sendHeld makes
	heldDue  bool   // a removal raised the coverage: send held bytes

	synAt, last, doneAt time.Time
	stats               Stats
	ver                 verifier // reply verification (verify.go)
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
	f.ver.init(len(branches), &cfg)
	return f, nil
}

// Read-only state (for /flows and tests).

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

// Input: packets, the clock and the failover hook.

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
	defer f.sendHeldDue(out)
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
	defer f.sendHeldDue(out)
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
	f.sendHeldDue(out)
}
