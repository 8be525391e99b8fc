package main

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/middlebox"
)

// SequencerFlags are the middlebox's sequencing flags (embedded in
// MiddleboxCmd): forked writes on --sequenced ports are stamped with a
// position in one global order, sent to every node on its order stream.
type SequencerFlags struct {
	Sequenced       []uint16      `name:"sequenced" sep:"," help:"Sequenced ports (a subset of --multicast): every forked client segment is stamped with a global order position sent to the flow's nodes (which must run with --order-listen). Repeat or comma-separate."`
	SequencerState  string        `name:"sequencer-state" default:"/var/lib/sdnkvs/sequencer.state" help:"File holding the sequencer clock's reserved ceiling, so a restarted middlebox never hands out an old position (with --sequenced)."`
	OrderPort       uint16        `name:"order-port" default:"7380" help:"Nodes' order-stream port (with --sequenced)."`
	OrderSecretFile string        `name:"order-secret-file" help:"File with the order-stream secret shared with the nodes (at least 16 bytes; required with --sequenced)."`
	OrderDownAfter  time.Duration `name:"order-down-timeout" default:"1s" help:"A node whose order stream is down this long is removed from the sequenced flows it serves (keep it below the nodes' --timeout, 2s by default)."`
}

// config returns the sequencing configuration (nil without --sequenced);
// errors name the flag at fault.
func (s *SequencerFlags) config(multicast []uint16) (*middlebox.SequencingConfig, error) {
	if len(s.Sequenced) == 0 {
		return nil, nil
	}
	for _, p := range s.Sequenced {
		if !slices.Contains(multicast, p) {
			return nil, fmt.Errorf("--sequenced: port %d is not a --multicast port", p)
		}
	}
	if s.SequencerState == "" {
		return nil, errors.New("--sequencer-state: empty path")
	}
	if s.OrderPort == 0 {
		return nil, errors.New("--order-port: 0")
	}
	if s.OrderDownAfter <= 0 {
		return nil, fmt.Errorf("--order-down-timeout: %v is not positive", s.OrderDownAfter)
	}
	if s.OrderSecretFile == "" {
		return nil, errors.New("--order-secret-file: required with --sequenced")
	}
	secret, err := peerauth.LoadSecret(s.OrderSecretFile)
	if err != nil {
		return nil, fmt.Errorf("--order-secret-file: %w", err)
	}
	return &middlebox.SequencingConfig{Ports: s.Sequenced, StatePath: s.SequencerState, OrderPort: s.OrderPort, Secret: secret, OrderDownTimeout: s.OrderDownAfter}, nil
}
