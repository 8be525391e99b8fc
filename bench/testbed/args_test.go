//go:build linux

package testbed

import (
	"strings"
	"testing"
)

func TestMiddleboxArgs(t *testing.T) {
	tb := &Testbed{cfg: Config{Name: "x", DCs: []DC{{Name: "sydney", Nodes: 2}, {Name: "dublin", Nodes: 1}}}}
	got := strings.Join(tb.MiddleboxArgs(MiddleboxOptions{Bin: "sdnkvs", Multicast: []uint16{6379}, Anycast: []uint16{6380}, TunMode: "plain"}), " ")
	want := "sdnkvs middlebox --tun sdn0 --vip 10.200.100.1 --multicast 6379 --anycast 6380 " +
		"--dc sydney=10.210.1.11:6379,10.210.1.12:6379 --dc dublin=10.210.2.11:6379 --control 127.0.0.1:9090 --routes --tun-mode plain"
	if got != want {
		t.Fatalf("args\n got %s\nwant %s", got, want)
	}
	kv := strings.Join(tb.KVSClusterArgs("sdnkvs", "sydney", "/d"), " ")
	if kv != "sdnkvs kvs cluster --ips 10.210.1.11,10.210.1.12 --data /d" {
		t.Fatalf("kvs args: %s", kv)
	}
}
