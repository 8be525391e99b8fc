//go:build linux

package demo

import (
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

func TestMaxGap(t *testing.T) {
	s := int64(time.Second)
	if g := maxGap([]int64{3 * s, 1 * s, 2 * s}, 10*s); g != 7 {
		t.Errorf("maxGap = %v, want 7 (last event to end)", g)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Bin: "/x"}
	c, err := good.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Near() != "sydney" || c.Far() != "dublin" || c.Nodes() != 9 || c.DCs[1].Delay != 170*time.Millisecond || c.Detector != "fast" || c.Duration > time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	for name, bad := range map[string]Config{
		"no binary": {},
		"same DCs":  {Bin: "/x", Topology: scenario.Topology{DCs: []testbed.DC{{Name: "a"}, {Name: "a"}}}},
		"one DC":    {Bin: "/x", Topology: scenario.Topology{DCs: []testbed.DC{{Name: "a"}}}},
		"mode":      {Bin: "/x", Mode: "magic"},
		"cut late":  {Bin: "/x", Duration: 5 * time.Second, CutAt: 6 * time.Second},
		"nodes":     {Bin: "/x", Topology: scenario.Topology{DCs: []testbed.DC{{Name: "a", Nodes: 500}, {Name: "b"}}}},
		"value":     {Bin: "/x", ValueSize: 4},
		"detector":  {Bin: "/x", Detector: "psychic"},
	} {
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
