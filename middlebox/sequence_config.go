package middlebox

import (
	"net/netip"
	"slices"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
)

// SequencingConfig turns on the sequencer (docs/design-sequencer.md): forked
// flows on Ports get every first-seen client byte range stamped with a
// position in one global order, sent to each of the flow's nodes on an
// order stream.
type SequencingConfig struct {
	// Ports are the sequenced ports, a subset of the multicast ports.
	Ports []uint16
	// StatePath is the file holding the clock's reserved ceiling, so a
	// restarted middlebox never hands out a position it handed out before.
	StatePath string
	// OrderPort is the nodes' order-stream port (default DefaultOrderPort).
	OrderPort uint16
	// Secret authenticates the middlebox to the nodes (peerauth).
	Secret []byte
	// QueueBytes bounds each node's queue of frames not yet written
	// (default DefaultOrderQueueBytes). A full queue is emptied and the
	// stream reconnected; the resync sends the flows' state again.
	QueueBytes int
	// OrderAddr maps a node to its order-stream address (default: the
	// node's IP and OrderPort). Tests point it at loopback.
	OrderAddr func(node netip.AddrPort) string
	// OrderDownTimeout removes a node's branch from its sequenced flows
	// once its order stream has been down this long (default
	// DefaultOrderDownTimeout): the node could not stamp those flows'
	// writes and would fail them, so the flow goes on without it, as
	// with a DC declared down.
	OrderDownTimeout time.Duration
	// Lead is how far ahead the persisted ceiling is reserved (default
	// sequencer.DefaultLead).
	Lead time.Duration
}

// Sequencing defaults.
const (
	DefaultOrderPort       = 7380
	DefaultOrderQueueBytes = 1 << 20
	// DefaultOrderDownTimeout is below the nodes' default command
	// deadline (2 s), so a branch is removed before its node fails writes
	// for want of a stamp.
	DefaultOrderDownTimeout = time.Second
)

// withDefaults fills zero fields with their defaults.
func (s SequencingConfig) withDefaults() SequencingConfig {
	if s.OrderPort == 0 {
		s.OrderPort = DefaultOrderPort
	}
	if s.QueueBytes == 0 {
		s.QueueBytes = DefaultOrderQueueBytes
	}
	if s.OrderDownTimeout == 0 {
		s.OrderDownTimeout = DefaultOrderDownTimeout
	}
	return s
}

// validate checks s (with defaults) against the multicast ports.
func (s *SequencingConfig) validate(multicast []uint16) error {
	if len(s.Ports) == 0 {
		return fieldErr("Sequencing.Ports", "no sequenced port")
	}
	for _, p := range s.Ports {
		if !slices.Contains(multicast, p) {
			return fieldErr("Sequencing.Ports", "sequenced port %d is not a multicast port", p)
		}
	}
	if s.StatePath == "" {
		return fieldErr("Sequencing.StatePath", "no state file")
	}
	if len(s.Secret) < peerauth.MinSecret {
		return fieldErr("Sequencing.Secret", "order-stream secret shorter than %d bytes", peerauth.MinSecret)
	}
	if s.QueueBytes < 4096 {
		return fieldErr("Sequencing.QueueBytes", "order queue of %d bytes is below 4096", s.QueueBytes)
	}
	if s.OrderDownTimeout < 0 {
		return fieldErr("Sequencing.OrderDownTimeout", "%v is negative", s.OrderDownTimeout)
	}
	if s.Lead < 0 {
		return fieldErr("Sequencing.Lead", "%v is negative", s.Lead)
	}
	return nil
}
