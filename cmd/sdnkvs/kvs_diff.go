package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/sdnkvs/sdnkvs/kvs"
)

// KvsDiffCmd is the divergence scan between two DCs.
type KvsDiffCmd struct {
	A            []string `name:"a" sep:"," required:"" placeholder:"HOST:PORT" help:"RESP addresses of every node of the first DC."`
	B            []string `name:"b" sep:"," required:"" placeholder:"HOST:PORT" help:"RESP addresses of every node of the second DC."`
	PasswordFile string   `name:"password-file" type:"path" required:"" help:"File holding the nodes' RESP password (their --requirepass-file): the scan's admin commands need an authenticated connection."`
	Page         int      `name:"page" default:"1000" help:"Records per scan page (1..10000); bounds memory per node."`
}

// errDiverged makes the command exit non-zero when keys differ.
var errDiverged = errors.New("the DCs' records differ")

// Validate checks the flags.
func (c *KvsDiffCmd) Validate() error {
	if c.Page < 1 || c.Page > kvs.MaxScanLimit {
		return fmt.Errorf("--page %d out of range 1..%d", c.Page, kvs.MaxScanLimit)
	}
	return nil
}

// Run compares the DCs and prints one line per key whose records differ:
// the key (quoted), then each DC's max-tag record.
func (c *KvsDiffCmd) Run(g *Globals) error {
	b, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return fmt.Errorf("--password-file: %w", err)
	}
	pass := strings.TrimRight(string(b), "\r\n")
	if pass == "" {
		return fmt.Errorf("--password-file: %s is empty", c.PasswordFile)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	st, err := kvs.Diff(ctx, kvs.DiffOptions{A: c.A, B: c.B, Password: pass, Page: c.Page}, func(d kvs.KeyDiff) {
		fmt.Printf("%s\ta: %v\tb: %v\n", strconv.Quote(string(d.Key)), d.A, d.B)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "kvs diff: %d keys differ (%d ranges compared by digest, %d scanned, %d records read)\n",
		st.Differing, st.Ranges, st.Scanned, st.Records)
	if st.Differing > 0 {
		return fmt.Errorf("%w: %d keys", errDiverged, st.Differing)
	}
	return nil
}
