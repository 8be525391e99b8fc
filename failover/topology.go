package failover

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// DC is one datacentre: a name and its nodes' service addresses. A
// topology lists DCs in preference order (most preferred first). It is
// the one topology type of the project: the middlebox's configuration and
// the detector share it.
type DC struct {
	Name  string
	Nodes []netip.AddrPort
}

// ValidateTopology checks a topology: at least one DC, each named (letters,
// digits, '-' and '_') and given once, each with at least one node, each
// node a valid address given once across all DCs.
func ValidateTopology(topo []DC) error {
	if len(topo) == 0 {
		return errors.New("no DC")
	}
	names := make(map[string]bool, len(topo))
	addrs := make(map[netip.AddrPort]string)
	for i, dc := range topo {
		if dc.Name == "" {
			return fmt.Errorf("DC %d has no name", i)
		}
		if err := checkDCName(dc.Name); err != nil {
			return err
		}
		if names[dc.Name] {
			return fmt.Errorf("DC %q given twice", dc.Name)
		}
		names[dc.Name] = true
		if len(dc.Nodes) == 0 {
			return fmt.Errorf("DC %q has no node", dc.Name)
		}
		for _, a := range dc.Nodes {
			if !a.IsValid() {
				return fmt.Errorf("DC %q has an invalid node address", dc.Name)
			}
			if other, dup := addrs[a]; dup {
				return fmt.Errorf("node %v is in DC %q and DC %q", a, other, dc.Name)
			}
			addrs[a] = dc.Name
		}
	}
	return nil
}

func checkDCName(name string) error {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("DC name %q may hold only letters, digits, '-' and '_'", name)
		}
	}
	return nil
}

// ParseDC parses a DC spec "name=ip:port,ip:port,..." (IPv4-mapped
// addresses are unmapped). It checks the spec's syntax only; a topology
// is checked as a whole by ValidateTopology.
func ParseDC(spec string) (DC, error) {
	name, list, ok := strings.Cut(spec, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.TrimSpace(list) == "" {
		return DC{}, fmt.Errorf("DC spec %q: want name=ip:port[,ip:port...]", spec)
	}
	if err := checkDCName(name); err != nil {
		return DC{}, fmt.Errorf("DC spec %q: %w", spec, err)
	}
	dc := DC{Name: name}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.Port() == 0 {
			return DC{}, fmt.Errorf("DC spec %q: node %q: want ip:port with a non-zero port", spec, s)
		}
		dc.Nodes = append(dc.Nodes, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return dc, nil
}
