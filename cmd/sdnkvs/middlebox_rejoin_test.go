package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
)

func TestMiddleboxRejoinFlags(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "order.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef-order\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--vip", "10.200.100.1", "--multicast", "6379", "--dc", "a=10.0.0.1:6379", "--dc", "b=10.0.0.2:6379"}
	seq := []string{"--sequenced", "6379", "--sequencer-state", filepath.Join(dir, "seq.state"), "--order-secret-file", secret}
	cli, err := parseMiddlebox(t, append(base, seq...)...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cli.Middlebox.config()
	if err != nil {
		t.Fatal(err)
	}
	lc := cfg.Lifecycle
	if lc == nil || lc.Mode != failover.RejoinCatchup || lc.Margin != 10*time.Second || lc.ResetAfter != 10*time.Second || lc.StatePath != filepath.Join(dir, "lifecycle.json") ||
		lc.VerifyEvery != time.Minute {
		t.Fatalf("sequenced default lifecycle %+v", lc)
	}
	for arg, want := range map[string]time.Duration{"5s": 5 * time.Second, "0s": time.Nanosecond} {
		cli, _ = parseMiddlebox(t, append(append(append([]string(nil), base...), seq...), "--rejoin-verify-every", arg)...)
		if cfg, err := cli.Middlebox.config(); err != nil || cfg.Lifecycle.VerifyEvery != want {
			t.Fatalf("--rejoin-verify-every %s: lifecycle %+v, %v; want VerifyEvery %v", arg, cfg.Lifecycle, err, want)
		}
	}
	cli, _ = parseMiddlebox(t, append(append(append([]string(nil), base...), seq...), "--rejoin-state-lost")...)
	if cfg, err := cli.Middlebox.config(); err != nil || !cfg.Lifecycle.StateLost {
		t.Fatalf("--rejoin-state-lost: lifecycle %+v, %v", cfg.Lifecycle, err)
	}
	cli, _ = parseMiddlebox(t, base...)
	if cfg, err := cli.Middlebox.config(); err != nil || cfg.Lifecycle.Mode != failover.RejoinManual || cfg.Lifecycle.StatePath != "" {
		t.Fatalf("unsequenced default lifecycle %+v, %v", cfg.Lifecycle, err)
	}
	cli, _ = parseMiddlebox(t, append(base, "--rejoin", "trust", "--rejoin-reset-after", "0s", "--rejoin-margin", "2s")...)
	if cfg, err := cli.Middlebox.config(); err != nil || cfg.Lifecycle.Mode != failover.RejoinTrust || cfg.Lifecycle.ResetAfter >= 0 || cfg.Lifecycle.Margin != 2*time.Second {
		t.Fatalf("trust lifecycle %+v, %v", cfg.Lifecycle, err)
	}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--rejoin", "catchup"}, "--rejoin"},
		{[]string{"--rejoin", "sometimes"}, "--rejoin"},
		{[]string{"--rejoin-margin", "0s"}, "--rejoin-margin"},
		{[]string{"--rejoin-reset-after", "-1s"}, "--rejoin-reset-after"},
		{[]string{"--rejoin-verify-every", "-1s"}, "--rejoin-verify-every"},
		{[]string{"--rejoin-state-lost"}, "--rejoin-state-lost"},
	} {
		_, err := parseMiddlebox(t, append(append([]string(nil), base...), tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: err = %v, want one naming %s", tc.args, err, tc.flag)
		}
	}
}
