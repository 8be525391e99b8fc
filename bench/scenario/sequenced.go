//go:build linux

package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
)

// Ports of a sequenced environment (the sdnkvs commands' defaults).
const (
	// OrderPort is the nodes' order-stream port.
	OrderPort = 7380
	// PeerPort is the nodes' peer port; the other DCs' catch-up drivers
	// read from it (--remote).
	PeerPort = 7379
)

// Sequencing selects how an environment's nodes and middlebox run
// (docs/design-sequencer.md, docs/design-lifecycle.md):
//
//	Sequenced: nodes --order-port OrderPort --order-secret-file F;
//	           middlebox --sequenced WritePort --order-port OrderPort
//	           --order-secret-file F --sequencer-state DIR/sequencer
//	Lifecycle: also --dc-name NAME --remote OTHER=IP:PeerPort,... and one
//	           --peer-secret-file shared by every DC, so that a joining DC
//	           catches up from another one
//	Password:  --requirepass-file on the nodes; every client connection
//	           the environment dials sends AUTH first (kvs diff needs it)
type Sequencing struct {
	Sequenced bool
	Lifecycle bool // implies Sequenced
	Password  string
	// CatchupRate is the nodes' --catchup-rate ("" keeps the default).
	CatchupRate string
}

// initSequencing writes the secrets of a sequenced environment into a
// fresh directory removed on Close.
func (e *Env) initSequencing() error {
	c := &e.cfg.Sequencing
	if c.Lifecycle {
		c.Sequenced = true
	}
	if !c.Sequenced && c.Password == "" {
		return nil
	}
	d, err := os.MkdirTemp("", "sdnkvs-seq-")
	if err != nil {
		return err
	}
	e.secDir = d
	seed := strconv.FormatInt(time.Now().UnixNano(), 36)
	files := map[string]string{"order.secret": seed + "-order-secret", "peer.secret": seed + "-peer-secret-of-every-dc"}
	if c.Password != "" {
		files["requirepass"] = c.Password
	}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(d, name), []byte(v+"\n"), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// SecretPath is the path of one of the environment's secret files:
// "order.secret", "peer.secret" or "requirepass" ("" when not sequenced).
func (e *Env) SecretPath(name string) string {
	if e.secDir == "" {
		return ""
	}
	return filepath.Join(e.secDir, name)
}

// StatePath is the middlebox's --sequencer-state path; it is kept across
// middlebox restarts in one environment.
func (e *Env) StatePath() string { return e.SecretPath("sequencer") }

// baseKVSArgs are the flags every start of a DC's cluster gets: the extra
// flags, the password and, for a lifecycle environment, the shared peer
// secret.
func (e *Env) baseKVSArgs() []string {
	args := append([]string(nil), e.cfg.KVSExtra...)
	if e.cfg.Password != "" {
		args = append(args, "--requirepass-file", e.SecretPath("requirepass"))
	}
	if e.cfg.Lifecycle {
		args = append(args, "--peer-secret-file", e.SecretPath("peer.secret"))
	}
	return args
}

// kvsArgs are DC dc's cluster flags.
func (e *Env) kvsArgs(dc string) []string {
	args := e.baseKVSArgs()
	if !e.cfg.Sequenced {
		return args
	}
	args = append(args, "--order-port", strconv.Itoa(OrderPort), "--order-secret-file", e.SecretPath("order.secret"))
	if !e.cfg.Lifecycle {
		return args
	}
	args = append(args, "--dc-name", dc)
	for _, d := range e.cfg.DCs {
		if d.Name == dc {
			continue
		}
		var peers []string
		for _, a := range e.TB.NodeAddrs(d.Name) {
			peers = append(peers, net.JoinHostPort(a.String(), strconv.Itoa(PeerPort)))
		}
		args = append(args, "--remote", d.Name+"="+strings.Join(peers, ","))
	}
	if e.cfg.CatchupRate != "" {
		args = append(args, "--catchup-rate", e.cfg.CatchupRate)
	}
	return args
}

// seedMarker writes MarkerKey into DC dc during a first, unsequenced
// start of its cluster (sequenced nodes refuse writes from outside the
// middlebox), then restarts the cluster sequenced. The marker's tag is an
// ABD tag, far below every sequenced tag, so catch-up never copies it
// and no forked write overwrites it.
func (e *Env) seedMarker(ctx context.Context, dc string) error {
	if err := e.startCluster(ctx, dc, e.baseKVSArgs()); err != nil {
		return err
	}
	if err := e.writeMarker(ctx, dc); err != nil {
		return err
	}
	e.StopCluster(dc)
	return e.StartCluster(ctx, dc)
}

// middleboxSeqArgs are the middlebox's sequencing flags (none when the
// environment is not sequenced).
func (e *Env) middleboxSeqArgs() []string {
	if !e.cfg.Sequenced {
		return nil
	}
	return []string{"--sequenced", strconv.Itoa(WritePort), "--order-port", strconv.Itoa(OrderPort),
		"--order-secret-file", e.SecretPath("order.secret"), "--sequencer-state", e.StatePath()}
}

// waitOrderStreams waits until the middlebox has an order stream up to
// every node of every DC that is not cut.
func (e *Env) waitOrderStreams(ctx context.Context) error {
	want := 0
	for _, l := range e.TB.Links() {
		if !l.Cut {
			want += len(l.Nodes)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		up, _, err := e.Metric("sdnkvs_middlebox_sequencer_order_up")
		if err == nil && int(up) >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("scenario: %v order streams up of %d (err %v); middlebox output:\n%s", up, want, err, e.MiddleboxOutput())
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
		return 0, errors.New("scenario: no sequencer_last_g metric")
	}
	rest := raw[i+1+len(name):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	f, err := strconv.ParseFloat(string(rest), 64)
	return uint64(f), err
}

// auth sends AUTH on a new connection when the environment has a
// password.
func (e *Env) auth(ctx context.Context, conn net.Conn) error {
	if e.cfg.Password == "" {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
	}
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(resp.AppendCommand(nil, []byte("AUTH"), []byte(e.cfg.Password))); err != nil {
		return err
	}
	var b [5]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	if string(b[:]) != "+OK\r\n" {
		return fmt.Errorf("AUTH: reply %q", b[:])
	}
	return nil
}

// KVSDiff runs `sdnkvs kvs diff` between DCs a and b from the gateway
// namespace and returns the number of keys whose records differ, besides
// MarkerKey (each DC holds its own). It needs a password (Sequencing) and
// no middlebox running (its policy routes hand the nodes' replies to the
// middlebox).
func (e *Env) KVSDiff(ctx context.Context, a, b string) (differ int, lines []string, err error) {
	if e.cfg.Password == "" {
		return 0, nil, errors.New("scenario: kvs diff needs an environment with a password")
	}
	addrs := func(dc string) string {
		var s []string
		for _, n := range e.TB.NodeAddrs(dc) {
			s = append(s, net.JoinHostPort(n.String(), strconv.Itoa(NodePort)))
		}
		return strings.Join(s, ",")
	}
	out, err := e.TB.Exec(ctx, "gw", e.cfg.Bin, "kvs", "diff", "--a", addrs(a), "--b", addrs(b), "--password-file", e.SecretPath("requirepass"))
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "\"") {
			continue
		}
		if strings.HasPrefix(l, strconv.Quote(MarkerKey)) {
			continue
		}
		differ++
		if len(lines) < 10 {
			lines = append(lines, l)
		}
	}
	if err != nil && differ == 0 && !strings.Contains(string(out), "keys differ") {
		return 0, nil, fmt.Errorf("scenario: kvs diff: %w: %s", err, out)
	}
	return differ, lines, nil
}
