package kvs

// Protocol-error penalty: a client whose command is a protocol error (an
// oversized multibulk header, a malformed length, a request over the query
// buffer limit) is answered -ERR and its connection is closed. A client that
// does this over and over, reconnecting at once, costs the node an accept,
// a goroutine, a read buffer and loopback copies per attempt, and costs the
// machine the abuser's own CPU: it took other clients' throughput to about
// half. Each source IP therefore has a budget of protocol errors (a token
// bucket of protoErrBurst, refilled at Config.ProtoErrRate per second);
// past it, the offending connection is held open, unread, for
// Config.ProtoErrHold before it is answered (-ERR) and closed. A client
// that waits for the reply or the close before reconnecting is slowed to a
// few attempts per second, and its writes stall on the full socket buffers
// instead of burning CPU. Well-
// behaved clients never see a protocol error, and the occasional one is
// within the burst: they are closed at once, as before. Holding never
// refuses anyone (clients sharing the abuser's IP are served normally), and
// the held connections are bounded (maxHeld; past it they are closed at
// once) and do not count toward MaxClients.

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	protoErrBurst = 10
	maxHeld       = 1024
	maxPenaltyIPs = 4096
)

type penaltyBox struct {
	rate rate.Limit
	hold time.Duration

	mu   sync.Mutex
	ips  map[netip.Addr]*rate.Limiter
	held int
}

func newPenaltyBox(perSecond float64, hold time.Duration) *penaltyBox {
	return &penaltyBox{rate: rate.Limit(perSecond), hold: hold, ips: make(map[netip.Addr]*rate.Limiter)}
}

// take charges one protocol error to the source IP of addr. It reports
// whether the connection must be held (the IP is over its budget and fewer
// than maxHeld connections are held); then the caller must call release
// when it stops holding it.
func (p *penaltyBox) take(addr net.Addr, now time.Time) bool {
	if p == nil {
		return false
	}
	ip := netip.Addr{}
	if ta, ok := addr.(*net.TCPAddr); ok {
		ip = ta.AddrPort().Addr().Unmap()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.ips[ip]
	if l == nil {
		if len(p.ips) >= maxPenaltyIPs {
			p.prune(now)
		}
		l = rate.NewLimiter(p.rate, protoErrBurst)
		p.ips[ip] = l
	}
	if l.AllowN(now, 1) || p.held >= maxHeld {
		return false
	}
	p.held++
	return true
}

func (p *penaltyBox) release() {
	p.mu.Lock()
	p.held--
	p.mu.Unlock()
}

// prune forgets the IPs whose budget is full again (they have nothing to
// remember), or every IP if that frees nothing. p.mu is held.
func (p *penaltyBox) prune(now time.Time) {
	for ip, l := range p.ips {
		if l.TokensAt(now) >= protoErrBurst {
			delete(p.ips, ip)
		}
	}
	if len(p.ips) >= maxPenaltyIPs {
		clear(p.ips)
	}
}

// holdBadClient answers c's protocol error with msg after the penalty
// (c's IP is over its budget: take returned true); c no longer counts as a
// client and its state is dropped. The penalty ends early on node close.
func (n *Node) holdBadClient(c net.Conn, msg []byte) {
	defer n.penalty.release()
	n.stats.ProtoHeld.Add(1)
	t := time.NewTimer(n.penalty.hold)
	defer t.Stop()
	select {
	case <-t.C:
	case <-n.closing:
		return
	}
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(msg)
}
