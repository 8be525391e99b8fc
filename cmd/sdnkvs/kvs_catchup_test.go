package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/kvs"
)

func TestKvsCatchupFlags(t *testing.T) {
	cli, _, err := parseArgs(t, "kvs", "cluster", "--base-port", "16379", "--data", "/tmp/c", "--order-port", "0",
		"--dc-name", "near", "--remote", "far=10.0.2.1:7379,10.0.2.2:7379", "--remote", "other=h:1", "--catchup-rate", "1MiB")
	if err != nil {
		t.Fatal(err)
	}
	var c kvs.Config
	if err := cli.Kvs.Cluster.KvsCatchupFlags.apply(&c); err != nil {
		t.Fatal(err)
	}
	if c.DCName != "near" || len(c.Remotes["far"]) != 2 || c.Remotes["far"][1] != "10.0.2.2:7379" || len(c.Remotes["other"]) != 1 || c.CatchupRate != 1<<20 {
		t.Fatalf("parsed %+v", c)
	}
	// Defaults: 64 MiB/s, no remotes.
	cli, _, err = parseArgs(t, "kvs", "--id", "1", "--peers", "127.0.0.1:7379", "--data", "/tmp/x")
	if err != nil {
		t.Fatal(err)
	}
	c = kvs.Config{}
	if err := cli.Kvs.Node.KvsCatchupFlags.apply(&c); err != nil || c.CatchupRate != 64<<20 || c.Remotes != nil || c.CatchupTarget != kvs.DefaultCatchupTarget {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	for _, bad := range []struct {
		f    KvsCatchupFlags
		want string
	}{
		{KvsCatchupFlags{DCName: "a-name-longer-than-16", CatchupRate: "0"}, "--dc-name"},
		{KvsCatchupFlags{Remote: []string{"far=h:1"}, CatchupRate: "0"}, "--remote needs --dc-name"},
		{KvsCatchupFlags{DCName: "near", Remote: []string{"far"}, CatchupRate: "0"}, "NAME=HOST:PORT"},
		{KvsCatchupFlags{DCName: "near", Remote: []string{"near=h:1"}, CatchupRate: "0"}, "own --dc-name"},
		{KvsCatchupFlags{DCName: "near", Remote: []string{"far=h:1", "far=h:2"}, CatchupRate: "0"}, "given twice"},
		{KvsCatchupFlags{DCName: "near", Remote: []string{"far=h:99999"}, CatchupRate: "0"}, "not HOST:PORT"},
		{KvsCatchupFlags{DCName: "near", CatchupRate: "fast"}, "--catchup-rate"},
		{KvsCatchupFlags{DCName: "near", CatchupRate: "0", CatchupTarget: -time.Millisecond}, "--catchup-target"},
	} {
		err := bad.f.apply(&kvs.Config{})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: err %v, want it to name %q", bad.f, err, bad.want)
		}
	}
}
