//go:build linux

package race

import (
	"context"
	"io"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// OrderPort is the nodes' order-stream port in sequenced runs.
const OrderPort = scenario.OrderPort

// Env is a demo environment (namespaces, one kvs cluster per DC, the
// middlebox) whose nodes and middlebox run sequenced or not
// (scenario.Sequencing).
type Env struct {
	*scenario.Env
	Sequenced bool
	mbExtra   []string
}

// NewEnv builds the testbed and starts the stores: with sequenced, every
// node listens for the order stream on OrderPort with a fresh secret.
func NewEnv(ctx context.Context, bin string, dcs []testbed.DC, sequenced bool, mbExtra []string, log io.Writer) (*Env, error) {
	de, err := scenario.NewEnv(ctx, scenario.EnvConfig{Bin: bin, DCs: dcs, Log: log, NoMarker: true,
		Sequencing: scenario.Sequencing{Sequenced: sequenced}})
	if err != nil {
		return nil, err
	}
	return &Env{Env: de, Sequenced: sequenced, mbExtra: mbExtra}, nil
}

// StartMiddlebox starts the middlebox (forked WritePort, anycast ReadPort;
// sequenced WritePort in sequenced runs) and, in sequenced runs, waits until
// every node's order stream is up.
func (e *Env) StartMiddlebox(ctx context.Context) error {
	return e.Env.StartMiddlebox(ctx, scenario.MB{Extra: e.mbExtra})
}
