//go:build linux

package main

import (
	"io"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

func parseBenchRace(t *testing.T, args ...string) (*CLI, error) {
	t.Helper()
	var cli CLI
	p, err := parser(&cli, kong.Writers(io.Discard, io.Discard), kong.Exit(func(int) { t.Fatal("kong tried to exit") }))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Parse(append([]string{"bench", "race"}, args...))
	return &cli, err
}

func TestBenchRaceFlags(t *testing.T) {
	cli, err := parseBenchRace(t, "--writers", "2,4,8", "--rounds", "200", "--delay", "sydney=5ms,dublin=170ms", "--no-baseline")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cli.Bench.Race.config()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Writers) != 3 || cfg.Rounds != 200 || len(cfg.DCs) != 2 || cfg.DCs[1].Delay.Milliseconds() != 170 || len(cfg.Modes) != 1 || !cfg.Modes[0] {
		t.Fatalf("config %+v", cfg)
	}
	cli, _ = parseBenchRace(t)
	if cfg, _ := cli.Bench.Race.config(); len(cfg.Modes) != 2 || cfg.Modes[0] || !cfg.Modes[1] {
		t.Fatalf("default modes %v, want baseline then sequenced", cfg.Modes)
	}
}

func TestBenchRaceBadFlagsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--writers", "0"}, "--writers"},
		{[]string{"--rounds", "0"}, "--rounds"},
		{[]string{"--no-sequenced", "--no-baseline"}, "--no-sequenced"},
		{[]string{"--delay", "sydney=x"}, "delay"},
		{[]string{"--load", "1s", "--load-clients", "0"}, "--load"},
	} {
		_, err := parseBenchRace(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: err = %v, want one naming %s", tc.args, err, tc.flag)
		}
	}
}
