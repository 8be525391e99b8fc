package kvs

// Client connections per source address (--maxclients-per-ip): without a
// cap, one client opening connections to a node directly (a node's port
// is reachable through the gateway) or through the anycast port takes
// every one of --maxclients, and every other client gets "max number of
// clients reached". The count is per IP address, as the node sees it (the
// middlebox is transparent, so that is the client's). Forked connections
// are spared, as over --maxclients (front.go): every DC gets them, and the
// middlebox bounds them per source (--max-flows-per-source).

import (
	"net"
	"net/netip"
	"sync"
)

type ipCounts struct {
	mu sync.Mutex
	m  map[netip.Addr]int
}

// addrOf is c's remote IP (zero when it has none).
func addrOf(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// add counts one more connection from ip and returns how many it holds.
func (p *ipCounts) add(ip netip.Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[netip.Addr]int{}
	}
	p.m[ip]++
	return p.m[ip]
}

// done forgets one connection from ip.
func (p *ipCounts) done(ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[ip] <= 1 {
		delete(p.m, ip)
		return
	}
	p.m[ip]--
}
