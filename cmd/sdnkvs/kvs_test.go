package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/sdnkvs/sdnkvs/kvs"
)

func parseArgs(t *testing.T, args ...string) (*CLI, *kong.Context, error) {
	t.Helper()
	var cli CLI
	p, err := parser(&cli, kong.Writers(io.Discard, io.Discard), kong.Exit(func(int) { t.Fatal("kong tried to exit") }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := p.Parse(args)
	return &cli, ctx, err
}

// The documented shape of one node: `sdnkvs kvs --id 3 --listen ...`.
func TestKvsNodeFlagsDocumentedShape(t *testing.T) {
	cli, ctx, err := parseArgs(t, "kvs", "--id", "3", "--listen", "10.210.1.13:6379",
		"--peer-listen", "10.210.1.13:7379", "--peers", "10.210.1.11:7379,10.210.1.12:7379,10.210.1.13:7379",
		"--data", "/tmp/x", "--quorum", "5", "--sync")
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Command() != "kvs node" {
		t.Fatalf("selected %q, want the default node subcommand", ctx.Command())
	}
	n := cli.Kvs.Node
	if n.ID != 3 || n.Listen != "10.210.1.13:6379" || n.PeerListen != "10.210.1.13:7379" || len(n.Peers) != 3 ||
		n.Data != "/tmp/x" || n.Quorum != 5 || !n.Sync || n.Timeout.Seconds() != 2 {
		t.Fatalf("parsed %+v", n)
	}
}

func TestKvsClusterFlags(t *testing.T) {
	cli, ctx, err := parseArgs(t, "kvs", "cluster", "--nodes", "9", "--base-port", "16379", "--data", "/tmp/c")
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Command() != "kvs cluster" {
		t.Fatalf("selected %q", ctx.Command())
	}
	cfg, _ := cli.Kvs.Cluster.Config()
	if cfg.Nodes != 9 || cfg.BasePort != 16379 || cfg.Dir != "/tmp/c" || len(cfg.IPs) != 0 {
		t.Fatalf("config %+v", cfg)
	}
	cli, _, err = parseArgs(t, "kvs", "cluster", "--ips", "10.210.1.11,10.210.1.12", "--data", "/tmp/c")
	if err != nil {
		t.Fatal(err)
	}
	if cfg, _ := cli.Kvs.Cluster.Config(); len(cfg.IPs) != 2 || cfg.Port != 6379 || cfg.PeerPort != 7379 || cfg.HTTPPort != 8379 {
		t.Fatalf("IP mode config %+v", cfg)
	}
}

// Bad flags give a usage error naming the flag.
func TestKvsBadFlagsNamed(t *testing.T) {
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"kvs", "--peers", "a:1", "--data", "/tmp/x"}, "--id"},
		{[]string{"kvs", "--id", "x", "--peers", "a:1", "--data", "/tmp/x"}, "--id"},
		{[]string{"kvs", "--id", "1", "--peers", "a:1", "--data", "/tmp/x", "--quorum", "five"}, "--quorum"},
		{[]string{"kvs", "cluster", "--nodes", "nine", "--data", "/tmp/x"}, "--nodes"},
		{[]string{"kvs", "--id", "1", "--peers", "a:1", "--data", "/tmp/x", "--timeout", "soon"}, "--timeout"},
		{[]string{"kvs", "--id", "1", "--peers", "a:1", "--data", "/tmp/x", "--insecure-peers=maybe"}, "--insecure-peers"},
	} {
		_, _, err := parseArgs(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%v: error %v, want one naming %s", c.args, err, c.flag)
		}
	}
}

func TestKvsOrderFlags(t *testing.T) {
	dir := t.TempDir()
	secret := dir + "/order.secret"
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"kvs", "--id", "1", "--peers", "127.0.0.1:7379", "--data", dir}
	cli, _, err := parseArgs(t, append(base, "--order-listen", "127.0.0.1:7380", "--order-secret-file", secret)...)
	if err != nil {
		t.Fatal(err)
	}
	if cli.Kvs.Node.OrderListen != "127.0.0.1:7380" || string(cli.Kvs.Node.Secret) != "0123456789abcdef0123" {
		t.Fatalf("parsed %+v", cli.Kvs.Node)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--order-listen", "127.0.0.1:7380"}, "--order-listen needs --order-secret-file"},
		{[]string{"--order-secret-file", secret}, "--order-secret-file is only meaningful with --order-listen"},
		{[]string{"--order-listen", "127.0.0.1:7380", "--order-secret-file", dir + "/missing"}, "--order-secret-file"},
	} {
		if _, _, err := parseArgs(t, append(base, c.args...)...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
	}
	cli, _, err = parseArgs(t, "kvs", "cluster", "--ips", "10.0.0.1,10.0.0.2", "--data", dir, "--order-port", "7380", "--order-secret-file", secret)
	if err != nil {
		t.Fatal(err)
	}
	cfgs, err := func() ([]kvs.Config, error) { cc, _ := cli.Kvs.Cluster.Config(); return cc.NodeConfigs() }()
	if err != nil {
		t.Fatal(err)
	}
	if cfgs[1].OrderListen != "10.0.0.2:7380" || len(cfgs[1].OrderSecret) != 20 {
		t.Fatalf("node 2 config: order %q secret %d bytes", cfgs[1].OrderListen, len(cfgs[1].OrderSecret))
	}
	if _, _, err := parseArgs(t, "kvs", "cluster", "--nodes", "3", "--data", dir, "--order-port", "7380"); err == nil || !strings.Contains(err.Error(), "--order-port needs --order-secret-file") {
		t.Errorf("cluster without secret: %v", err)
	}
}

// Secret files: errors name the flag.
func TestKvsSecretFlags(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("0123456789abcdef0123\n"), 0o600)
	for _, c := range []struct {
		flags KvsSecurityFlags
		want  string
	}{
		{KvsSecurityFlags{PeerSecretFile: short}, "--peer-secret-file"},
		{KvsSecurityFlags{PeerSecretFile: filepath.Join(dir, "none")}, "--peer-secret-file"},
		{KvsSecurityFlags{PeerSecretFile: good, InsecurePeers: true}, "--insecure-peers"},
		{KvsSecurityFlags{RequirepassFile: filepath.Join(dir, "none")}, "--requirepass-file"},
	} {
		if _, _, err := c.flags.loadSecrets(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.flags, err, c.want)
		}
	}
	secret, pass, err := KvsSecurityFlags{PeerSecretFile: good, RequirepassFile: good}.loadSecrets()
	if err != nil || string(secret) != "0123456789abcdef0123" || string(pass) != "0123456789abcdef0123" {
		t.Fatalf("good files: %q %q %v", secret, pass, err)
	}
}

// --maxclients-per-ip: default 2500, given values reach kvs.Config, and a
// negative one is refused with a message naming the flag.
func TestKvsMaxClientsPerIPFlag(t *testing.T) {
	cli, _, err := parseArgs(t, "kvs", "cluster", "--data", "/tmp/c")
	if err != nil {
		t.Fatal(err)
	}
	var c kvs.Config
	if err := cli.Kvs.Cluster.KvsLimitFlags.apply(&c); err != nil || c.MaxClientsPerIP != 2500 {
		t.Fatalf("default: %d, %v", c.MaxClientsPerIP, err)
	}
	cli, _, err = parseArgs(t, "kvs", "cluster", "--data", "/tmp/c", "--maxclients-per-ip", "0")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Kvs.Cluster.KvsLimitFlags.apply(&c); err != nil || c.MaxClientsPerIP != 0 {
		t.Fatalf("0: %d, %v", c.MaxClientsPerIP, err)
	}
	f := cli.Kvs.Cluster.KvsLimitFlags
	f.MaxClientsPerIP = -1
	if err := f.apply(&kvs.Config{}); err == nil || !strings.Contains(err.Error(), "--maxclients-per-ip") {
		t.Fatalf("negative: %v", err)
	}
}
