//go:build linux

package scenario

import (
	"fmt"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

// Topology is the two-DC topology of the demo and the failover
// experiment: a near DC (preferred, the one cut) and a far DC (the
// survivor), validated by the testbed's one validator.
type Topology struct {
	// Name is the testbed run id ("": fresh).
	Name string
	// DCs are the near DC, then the far DC (nil: DefaultDCs).
	DCs []testbed.DC
}

// DefaultDCs is the paper's topology at a smaller scale: sydney 5 ms and
// dublin 170 ms one way, 100 Mbit/s links, 9 nodes each.
func DefaultDCs() []testbed.DC {
	return []testbed.DC{
		{Name: "sydney", Nodes: 9, Delay: 5 * time.Millisecond, Rate: 100e6},
		{Name: "dublin", Nodes: 9, Delay: 170 * time.Millisecond, Rate: 100e6},
	}
}

// WithDefaults fills in the default DCs and validates t.
func (t Topology) WithDefaults() (Topology, error) {
	if len(t.DCs) == 0 {
		t.DCs = DefaultDCs()
	}
	if len(t.DCs) != 2 {
		return t, fmt.Errorf("%d DCs: want two, the near one then the far one", len(t.DCs))
	}
	c, err := testbed.Config{Name: t.Name, DCs: t.DCs}.WithDefaults()
	if err != nil {
		return t, err
	}
	t.DCs = c.DCs
	return t, nil
}

// Near is the near DC's name.
func (t Topology) Near() string { return t.DCs[0].Name }

// Far is the far DC's name.
func (t Topology) Far() string { return t.DCs[len(t.DCs)-1].Name }

// Nodes is the number of nodes of the near DC.
func (t Topology) Nodes() int { return t.DCs[0].Nodes }
