//go:build linux

package race

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// OrderPort is the nodes' order-stream port in sequenced runs.
const OrderPort = 7380

// Env is a demo environment (namespaces, one kvs cluster per DC, the
// middlebox) whose nodes and middlebox run sequenced or not.
type Env struct {
	*scenario.Env
	Sequenced bool
	dir       string // secret and sequencer state
	mbExtra   []string
}

// NewEnv builds the testbed and starts the stores: with sequenced, every
// node listens for the order stream on OrderPort with a fresh secret.
func NewEnv(ctx context.Context, bin string, dcs []testbed.DC, sequenced bool, mbExtra []string, log io.Writer) (*Env, error) {
	dir, err := os.MkdirTemp("", "sdnkvs-race-")
	if err != nil {
		return nil, err
	}
	e := &Env{Sequenced: sequenced, dir: dir, mbExtra: mbExtra}
	var kvsExtra []string
	if sequenced {
		if err := os.WriteFile(e.secretPath(), []byte(strconv.FormatInt(time.Now().UnixNano(), 36)+"-race-order-secret\n"), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		kvsExtra = []string{"--order-port", strconv.Itoa(OrderPort), "--order-secret-file", e.secretPath()}
	}
	de, err := scenario.NewEnv(ctx, scenario.EnvConfig{Bin: bin, DCs: dcs, KVSExtra: kvsExtra, Log: log, NoMarker: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e.Env = de
	return e, nil
}

func (e *Env) secretPath() string { return filepath.Join(e.dir, "order.secret") }

// StatePath is the sequencer's state file (kept across middlebox
// restarts).
func (e *Env) StatePath() string { return filepath.Join(e.dir, "sequencer.state") }

// StartMiddlebox starts the middlebox (forked WritePort, anycast ReadPort;
// sequenced WritePort in sequenced runs) and, in sequenced runs, waits until
// every node's order stream is up.
func (e *Env) StartMiddlebox(ctx context.Context) error {
	extra := append([]string(nil), e.mbExtra...)
	if e.Sequenced {
		extra = append(extra, "--sequenced", strconv.Itoa(scenario.WritePort), "--order-port", strconv.Itoa(OrderPort),
			"--order-secret-file", e.secretPath(), "--sequencer-state", e.StatePath())
	}
	if err := e.Env.StartMiddlebox(ctx, scenario.MB{Extra: extra}); err != nil {
		return err
	}
	if !e.Sequenced {
		return nil
	}
	want := 0
	for _, d := range e.Config().DCs {
		want += len(e.TB.NodeAddrs(d.Name))
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		up, _, err := e.Metric("sdnkvs_middlebox_sequencer_order_up")
		if err == nil && int(up) == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("race: %v order streams up of %d (err %v); middlebox output:\n%s", up, want, err, e.MiddleboxOutput())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LastG is the sequencer's last handed-out position.
func (e *Env) LastG() (uint64, error) {
	raw, err := e.Control("/metrics")
	if err != nil {
		return 0, err
	}
	const name = "sdnkvs_middlebox_sequencer_last_g "
	i := bytes.Index(raw, []byte("\n"+name))
	if i < 0 {
		return 0, errors.New("race: no sequencer_last_g metric")
	}
	rest := raw[i+1+len(name):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	f, err := strconv.ParseFloat(string(rest), 64)
	return uint64(f), err
}

// Close tears everything down.
func (e *Env) Close() error {
	err := e.Env.Close()
	os.RemoveAll(e.dir)
	return err
}
