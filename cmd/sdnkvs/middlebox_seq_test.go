package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMiddleboxSequencedFlags(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "order.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef-order\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "seq.state")
	cli, err := parseMiddlebox(t, "--vip", "10.200.100.1", "--multicast", "6379,6390", "--dc", "a=10.0.0.1:6379",
		"--sequenced", "6379", "--sequencer-state", state, "--order-secret-file", secret, "--order-port", "7390")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cli.Middlebox.config()
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sequencing
	if s == nil || len(s.Ports) != 1 || s.Ports[0] != 6379 || s.StatePath != state || s.OrderPort != 7390 || s.OrderDownTimeout != time.Second || string(s.Secret) != "0123456789abcdef-order" {
		t.Fatalf("sequencing config %+v", s)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("middlebox rejects the flags' config: %v", err)
	}
	cli, _ = parseMiddlebox(t, "--vip", "10.200.100.1", "--multicast", "6379", "--dc", "a=10.0.0.1:6379")
	if cfg, _ := cli.Middlebox.config(); cfg.Sequencing != nil {
		t.Fatal("sequencing on by default")
	}
}

func TestMiddleboxSequencedBadFlagsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("short\n"), 0o600)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("0123456789abcdef-order\n"), 0o600)
	base := []string{"--vip", "10.200.100.1", "--multicast", "6379", "--anycast", "6380", "--dc", "a=10.0.0.1:6379"}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--sequenced", "6380", "--order-secret-file", good}, "--sequenced"},
		{[]string{"--sequenced", "6379"}, "--order-secret-file"},
		{[]string{"--sequenced", "6379", "--order-secret-file", short}, "--order-secret-file"},
		{[]string{"--sequenced", "6379", "--order-secret-file", filepath.Join(dir, "missing")}, "--order-secret-file"},
		{[]string{"--sequenced", "6379", "--order-secret-file", good, "--order-port", "0"}, "--order-port"},
		{[]string{"--sequenced", "6379", "--order-secret-file", good, "--sequencer-state", ""}, "--sequencer-state"},
		{[]string{"--sequenced", "6379", "--order-secret-file", good, "--order-down-timeout", "0s"}, "--order-down-timeout"},
	} {
		_, err := parseMiddlebox(t, append(append([]string(nil), base...), tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: err = %v, want one naming %s", tc.args, err, tc.flag)
		}
	}
}
