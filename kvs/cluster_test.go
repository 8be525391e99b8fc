package kvs

import "testing"

func TestClusterConfigModes(t *testing.T) {
	cfgs, err := ClusterConfig{IPs: []string{"10.210.1.11", "10.210.1.12", "10.210.1.13"}, Dir: "/d"}.NodeConfigs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 3 || cfgs[2].ID != 3 || cfgs[2].Listen != "10.210.1.13:6379" || cfgs[2].PeerListen != "10.210.1.13:7379" ||
		cfgs[2].HTTPListen != "10.210.1.13:8379" || len(cfgs[2].Peers) != 3 || cfgs[2].Dir != "/d/node3" {
		t.Fatalf("IP mode: %+v", cfgs[2])
	}
	cfgs, err = ClusterConfig{Nodes: 9, BasePort: 16379, Dir: "/d"}.NodeConfigs()
	if err != nil {
		t.Fatal(err)
	}
	if cfgs[8].Listen != "127.0.0.1:16387" || cfgs[8].PeerListen != "127.0.0.1:16487" || cfgs[8].HTTPListen != "127.0.0.1:16587" {
		t.Fatalf("port mode: %+v", cfgs[8])
	}
	if _, err := (ClusterConfig{IPs: []string{"not-an-ip"}}).NodeConfigs(); err == nil {
		t.Fatal("a bad IP must be refused")
	}
	if _, err := Start(Config{ID: 1, InMemory: true, Quorum: 1, Peers: []string{"a:1", "b:1"}, Listen: "127.0.0.1:0", PeerListen: "127.0.0.1:0"}); err == nil {
		t.Fatal("quorum 1 of 3 must be refused (two quorums must intersect)")
	}
}
