package main

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"github.com/sdnkvs/sdnkvs/middlebox"
)

func parseMiddlebox(t *testing.T, args ...string) (*CLI, error) {
	t.Helper()
	var cli CLI
	p, err := parser(&cli, kong.Writers(io.Discard, io.Discard), kong.Exit(func(int) { t.Fatal("kong tried to exit") }))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Parse(append([]string{"middlebox"}, args...))
	return &cli, err
}

// middleboxConfig parses args as parseMiddlebox does and builds the
// middlebox's config; an error from either fails the test.
func middleboxConfig(t *testing.T, args ...string) (*MiddleboxCmd, middlebox.Config) {
	t.Helper()
	cli, err := parseMiddlebox(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cli.Middlebox.config()
	if err != nil {
		t.Fatal(err)
	}
	return &cli.Middlebox, cfg
}

func TestMiddleboxFlagsDocumentedShape(t *testing.T) {
	c, cfg := middleboxConfig(t, "--tun", "sdn0", "--vip", "10.200.100.1",
		"--multicast", "6379", "--anycast", "6380",
		"--dc", "sydney=10.210.1.11:6379,10.210.1.12:6379",
		"--dc", "dublin=10.210.2.11:6379", "--control", "127.0.0.1:9090", "--routes")
	if cfg.VIP != netip.MustParseAddr("10.200.100.1") || len(cfg.DCs) != 2 || cfg.DCs[0].Name != "sydney" || len(cfg.DCs[0].Nodes) != 2 ||
		cfg.DCs[1].Nodes[0] != netip.MustParseAddrPort("10.210.2.11:6379") || !c.Routes || c.TUNMode != "offload" ||
		c.MTU != 1500 || c.MaxFlows != 262144 || c.IdleTimeout.Minutes() != 5 {
		t.Fatalf("parsed %+v into %+v", c, cfg)
	}
	if len(cfg.MulticastPorts) != 1 || cfg.MulticastPorts[0] != 6379 || len(cfg.AnycastPorts) != 1 || cfg.AnycastPorts[0] != 6380 {
		t.Fatalf("ports: %v %v", cfg.MulticastPorts, cfg.AnycastPorts)
	}
}

func TestMiddleboxDetectorFlags(t *testing.T) {
	_, cfg := middleboxConfig(t, "--vip", "10.200.100.1", "--anycast", "6380", "--dc", "a=10.0.0.1:6379", "--detector", "paper", "--probe", "tcp", "--probe-port", "7000")
	if cfg.Failover == nil || cfg.Failover.Detector.Mode.String() != "paper" || cfg.Failover.ProbePort != 7000 {
		t.Fatalf("failover config %+v", cfg.Failover)
	}
	if _, cfg := middleboxConfig(t, "--vip", "10.200.100.1", "--anycast", "6380", "--dc", "a=10.0.0.1:6379"); cfg.Failover == nil || cfg.Failover.Detector.Mode != failover.Safe || cfg.Failover.Probe != prober.HTTP {
		t.Fatalf("default detector %+v, want safe with readiness probes", cfg.Failover)
	}
	if _, cfg := middleboxConfig(t, "--vip", "10.200.100.1", "--anycast", "6380", "--dc", "a=10.0.0.1:6379", "--detector", "none"); cfg.Failover != nil {
		t.Fatal("--detector none runs a detector")
	}
}

func TestMiddleboxRepeatedAndListPorts(t *testing.T) {
	cli, err := parseMiddlebox(t, "--vip", "10.200.100.1", "--anycast", "6380,6381", "--anycast", "6382",
		"--dc", "a=10.0.0.1:1", "--tun-mode", "plain", "--max-flows", "10", "--idle-timeout", "30s")
	if err != nil {
		t.Fatal(err)
	}
	if got := cli.Middlebox.Anycast; len(got) != 3 || got[2] != 6382 {
		t.Fatalf("anycast ports %v, want [6380 6381 6382]", got)
	}
	if cli.Middlebox.TUNMode != "plain" || cli.Middlebox.MaxFlows != 10 {
		t.Fatalf("%+v", cli.Middlebox)
	}
}

func TestMiddleboxBadFlagsNameTheFlag(t *testing.T) {
	base := func(over map[string][]string) []string {
		m := map[string][]string{
			"--vip":     {"10.200.100.1"},
			"--anycast": {"6380"},
			"--dc":      {"sydney=10.210.1.11:6379"},
		}
		for k, v := range over {
			m[k] = v
		}
		var args []string
		for k, vs := range m {
			for _, v := range vs {
				args = append(args, k, v)
			}
		}
		return args
	}
	cases := []struct {
		name string
		args []string
		flag string
	}{
		{"bad vip", base(map[string][]string{"--vip": {"10.200.100"}}), "--vip"},
		{"ipv6 vip", base(map[string][]string{"--vip": {"fd00::1"}}), "--vip"},
		{"no dc", base(map[string][]string{"--dc": nil}), "--dc"},
		{"dc no name", base(map[string][]string{"--dc": {"10.0.0.1:1"}}), "--dc"},
		{"dc bad node", base(map[string][]string{"--dc": {"x=10.0.0.1"}}), "--dc"},
		{"dc twice", base(map[string][]string{"--dc": {"x=10.0.0.1:1", "x=10.0.0.2:1"}}), "--dc"},
		{"node twice", base(map[string][]string{"--dc": {"x=10.0.0.1:1", "y=10.0.0.1:1"}}), "--dc"},
		{"both kinds", base(map[string][]string{"--multicast": {"6380"}}), "--multicast"},
		{"bad port", base(map[string][]string{"--anycast": {"70000"}}), "--anycast"},
		{"no port", base(map[string][]string{"--anycast": nil}), "--anycast"},
		{"min replicas", append(base(nil), "--min-replicas", "2"), "--min-replicas"},
		{"detector", append(base(nil), "--detector", "slow"), "--detector"},
		{"probe port is service port", append(base(nil), "--detector", "fast", "--probe-port", "6379"), "--probe-port"},
		{"probe interval", append(base(nil), "--detector", "fast", "--probe-interval", "1ms"), "--probe-interval"},
		{"tun mode", append(base(nil), "--tun-mode", "fast"), "--tun-mode"},
		{"mtu", append(base(nil), "--mtu", "100"), "--mtu"},
		{"max flows", append(base(nil), "--max-flows", "0"), "--max-flows"},
		{"idle", append(base(nil), "--idle-timeout", "1ms"), "--idle-timeout"},
		{"half-open", append(base(nil), "--half-open-timeout", "0s"), "--half-open-timeout"},
		{"max half-open", append(base(nil), "--max-half-open", "0"), "--max-half-open"},
		{"max flows per source", append(base(nil), "--max-flows-per-source=-1"), "--max-flows-per-source"},
		{"control", append(base(nil), "--control", "nowhere"), "--control"},
		{"tun name", append(base(nil), "--tun", "a-very-long-interface-name"), "--tun"},
		{"no vip", []string{"--anycast", "6380", "--dc", "a=10.0.0.1:1"}, "--vip"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseMiddlebox(t, c.args...)
			if err == nil {
				t.Fatalf("%v: no error", c.args)
			}
			if !strings.Contains(err.Error(), c.flag) {
				t.Fatalf("%v: error %q does not name %s", c.args, err, c.flag)
			}
		})
	}
}

// Forked flows keep SACK and verify reply bytes by default; --no-sack
// strips SACK as the paper did, --no-verify-replies turns verification off.
func TestMiddleboxForkBoolFlags(t *testing.T) {
	base := []string{"--vip", "10.200.100.1", "--multicast", "6379", "--dc", "a=10.0.0.1:6379"}
	sack := func(c middlebox.Config) bool { return c.Fork.SACK }
	verify := func(c middlebox.Config) bool { return !c.Fork.NoVerify }
	for _, c := range []struct {
		extra []string
		field string
		get   func(middlebox.Config) bool
		want  bool
	}{
		{nil, "Fork.SACK", sack, true},
		{[]string{"--no-sack"}, "Fork.SACK", sack, false},
		{[]string{"--sack"}, "Fork.SACK", sack, true},
		{nil, "!Fork.NoVerify", verify, true},
		{[]string{"--no-verify-replies"}, "!Fork.NoVerify", verify, false},
		{[]string{"--verify-replies"}, "!Fork.NoVerify", verify, true},
	} {
		_, cfg := middleboxConfig(t, append(slices.Clone(base), c.extra...)...)
		if got := c.get(cfg); got != c.want {
			t.Errorf("%v: %s %v, want %v", c.extra, c.field, got, c.want)
		}
	}
}
