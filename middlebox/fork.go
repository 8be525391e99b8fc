package middlebox

import (
	"net/netip"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
)

// MaxBranches is the largest number of branches (one per DC) a forked flow
// may have.
const MaxBranches = 8

// ForkHandler is the seam for TCP forking (ackmerge). For each new
// connection to a multicast port the middlebox picks one live node per
// live DC (in preference order), registers the flow and its reverse keys,
// and asks the handler for a ForkedFlow; from then on every packet of the
// connection goes to that ForkedFlow.
//
// The middlebox calls a ForkHandler and its flows only from its single
// data-path goroutine (with the flow table locked): implementations need
// not be safe for concurrent use and must not block.
type ForkHandler interface {
	NewFlow(client netip.AddrPort, vport uint16, branches []netip.AddrPort, now time.Time) (ForkedFlow, error)
}

// ForkedFlow is the state of one forked connection.
//
// pkt is a view of a packet in a middlebox buffer, owned by the middlebox:
// the flow may rewrite it in place (including TrimPayload, after which it
// must report the shift) and return forward=true to have it written, or
// false to have it dropped. It must not keep pkt after returning. Extra
// packets are made with out.Clone.
type ForkedFlow interface {
	// FromClient handles a packet from the client to VIP:vport.
	FromClient(pkt *packet.TCP, now time.Time, out Emitter) (forward bool, shift int)
	// FromBranch handles a packet from branch k (index into the branches
	// given to NewFlow).
	FromBranch(k int, pkt *packet.TCP, now time.Time, out Emitter) (forward bool, shift int)
	// Done reports whether the connection is over (the middlebox then
	// removes the flow, after its FIN linger).
	Done() bool
}

// Emitter lets a ForkedFlow send packets besides the one it was given.
type Emitter interface {
	// Clone copies pkt (and its virtio-net header) into a fresh buffer
	// that is written with the current batch, and returns a view of the
	// copy for the caller to rewrite (valid until the call that received
	// out returns). It returns nil when no buffer is free (counted as a
	// drop).
	Clone(pkt *packet.TCP) *packet.TCP
}
