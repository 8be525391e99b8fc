package kvs

// Peer authentication glue: every peer connection, in both directions,
// starts with internal/peerauth's handshake when the node has a cluster
// secret (Config.PeerSecret). The accepting side admits only members other
// than itself; the dialling side checks that the address it dialled answers
// with the id the peer list gives it, which also catches two nodes started
// with the same id (see docs/design-peerauth.md).

import (
	"bufio"
	"fmt"
	"net"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
)

const handshakeTimeout = 3 * time.Second

// roleDCReader is the peerauth role of another DC's catch-up driver: it
// proves the same cluster secret but may only read the catch-up stream
// (kindCatchup); any other request drops its connection. Its handshake
// names the cluster CatchupCluster rather than a DC's --cluster-id, so DCs
// with different cluster ids (and the same secret) can catch up.
const roleDCReader = "dc-reader"

// CatchupCluster is the peerauth cluster name of catch-up connections.
const CatchupCluster = "sdnkvs-catchup"

// peekConn reads through a buffer that has peeked at the client's hello.
type peekConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// peekCluster returns the cluster named in the client hello waiting on br
// ("" if it cannot tell: peerauth then reports the problem). The layout is
// peerauth's: magic(4) type(1) len(2) | nonce(32) | cluster len(1) cluster.
func peekCluster(br *bufio.Reader) string {
	const head = 7 + 32 + 1
	h, err := br.Peek(head)
	if err != nil || string(h[:4]) != "SKPA" || h[4] != 1 {
		return ""
	}
	cl := int(h[head-1])
	b, err := br.Peek(head + cl)
	if err != nil {
		return ""
	}
	return string(b[head:])
}

// acceptCatchup authenticates another DC's catch-up driver.
func (n *Node) acceptCatchup(c net.Conn) (peerauth.Hello, error) {
	self := peerauth.Hello{Cluster: CatchupCluster, Role: peerauth.RoleNode, ID: uint64(n.cfg.ID)}
	return peerauth.Server(c, n.cfg.PeerSecret, self, func(p peerauth.Hello) error {
		if p.Role != roleDCReader {
			return fmt.Errorf("role %q may not use the catch-up handshake", p.Role)
		}
		return nil
	}, time.Now().Add(handshakeTimeout))
}

func (n *Node) hello() peerauth.Hello {
	return peerauth.Hello{Cluster: n.cfg.Cluster, Role: peerauth.RoleNode, ID: uint64(n.cfg.ID)}
}

// acceptPeer authenticates an inbound peer connection. It returns the
// peer's hello; with no secret (insecure mode) it returns an anonymous node.
func (n *Node) acceptPeer(c net.Conn) (peerauth.Hello, error) {
	if n.cfg.PeerSecret == nil {
		return peerauth.Hello{Cluster: n.cfg.Cluster, Role: peerauth.RoleNode}, nil
	}
	return peerauth.Server(c, n.cfg.PeerSecret, n.hello(), func(p peerauth.Hello) error {
		switch {
		case p.Role != peerauth.RoleNode:
			return fmt.Errorf("role %q not served on the peer port", p.Role)
		case p.ID == uint64(n.cfg.ID):
			n.idCollision(fmt.Sprintf("a peer connecting from %s claims this node's id", c.RemoteAddr()))
			return fmt.Errorf("id collision: node %d is this node's own id", p.ID)
		case !n.isMember(p.ID):
			return fmt.Errorf("node %d is %w of cluster %q", p.ID, errNotMemberID, n.cfg.Cluster)
		}
		if want := n.expectedIP(p.ID); want != nil {
			if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok && !ra.IP.Equal(want) {
				n.stats.IDCollisions.Add(1)
				return fmt.Errorf("id collision: node %d connects from %s, this connection comes from %s", p.ID, want, ra.IP)
			}
		}
		return nil
	}, time.Now().Add(handshakeTimeout))
}

// dialPeer authenticates an outbound connection to member want.
func (n *Node) dialPeer(c net.Conn, want uint64) error {
	if n.cfg.PeerSecret == nil {
		return nil
	}
	p, err := peerauth.Client(c, n.cfg.PeerSecret, n.hello(), time.Now().Add(handshakeTimeout))
	if p.Role == peerauth.RoleNode && p.ID == uint64(n.cfg.ID) {
		n.idCollision(fmt.Sprintf("%s, listed as node %d, answers with this node's id", c.RemoteAddr(), want))
	}
	if err != nil {
		return err
	}
	if p.Role != peerauth.RoleNode || p.ID != want {
		n.stats.IDCollisions.Add(1)
		return fmt.Errorf("id collision: %s answers as %s %d, the peer list says node %d", c.RemoteAddr(), p.Role, p.ID, want)
	}
	return nil
}

// idCollision records that another process claims this node's id. The node
// stops coordinating writes (two writers with one id could give two values
// the same tag) and reports not ready until restarted with a correct id.
func (n *Node) idCollision(why string) {
	n.stats.IDCollisions.Add(1)
	if n.collision.CompareAndSwap(false, true) {
		n.log.Error("node id collision: refusing writes until restarted with a unique id", "id", n.cfg.ID, "why", why)
	}
}
