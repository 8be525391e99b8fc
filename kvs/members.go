package kvs

// Membership: who may take part in quorums and write tags.
//
// Config.Peers lists every node of the cluster, this one included. An entry
// is "addr" (the i-th entry, from 0, is node i+1) or "id=addr". The entry
// with this node's id is this node (never dialled). Only members may
// connect to the peer port, and a write's tag must name a member as its
// writer (Writer >> 48 for ABD tags).

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// MaxNodeID is the largest node id: ABD writers are id<<48 | seq and must
// keep the top bit clear (a set top bit marks a sequenced, stamped tag).
const MaxNodeID = 1<<15 - 1

// MaxCounter bounds a tag's counter: a replica refuses higher counters, so
// that a coordinator's Counter+1 can never overflow.
const MaxCounter = 1<<63 - 1

// stampedBit marks a sequenced write's writer (see the sequencer): Writer =
// stampedBit | stream offset.
const stampedBit = 1 << 63

// member is one node of the cluster.
type member struct {
	id   uint64
	addr string
}

// parseMembers expands Config.Peers into members sorted by id.
func parseMembers(peers []string) ([]member, error) {
	var ms []member
	seen := map[uint64]bool{}
	for i, p := range peers {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		id := uint64(i + 1)
		if k := strings.IndexByte(p, '='); k >= 0 {
			v, err := strconv.ParseUint(p[:k], 10, 16)
			if err != nil {
				return nil, fmt.Errorf("kvs: peer %q: id before '=' must be a number", p)
			}
			id, p = v, p[k+1:]
		}
		if id < 1 || id > MaxNodeID {
			return nil, fmt.Errorf("kvs: peer %q: node id %d out of range 1..%d", p, id, MaxNodeID)
		}
		if seen[id] {
			return nil, fmt.Errorf("kvs: node id %d appears twice in the peer list", id)
		}
		seen[id] = true
		ms = append(ms, member{id: id, addr: p})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].id < ms[j].id })
	return ms, nil
}

// membershipHash identifies a membership (ids and addresses) for the node
// identity file.
func membershipHash(ms []member) string {
	h := sha256.New()
	for _, m := range ms {
		h.Write(binary.BigEndian.AppendUint64(nil, m.id))
		h.Write([]byte(m.addr))
		h.Write([]byte{0})
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:16])
}

// sameListen checks that the peer list's address for this node is the
// address it listens on (a wildcard listen address matches any host with
// the same port).
func sameListen(listed, listen string) error {
	if listed == listen {
		return nil
	}
	lh, lp, err1 := net.SplitHostPort(listed)
	h, p, err2 := net.SplitHostPort(listen)
	if err1 == nil && err2 == nil && lp == p {
		if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
			return nil
		}
		if lip, ip := net.ParseIP(lh), net.ParseIP(h); lip != nil && ip != nil && lip.Equal(ip) {
			return nil
		}
	}
	return fmt.Errorf("the peer list gives this node the address %s but it listens on %s", listed, listen)
}

var (
	errTagWriter   = errors.New("tag writer is not a member")
	errTagCounter  = errors.New("tag counter out of range")
	errTagStamped  = errors.New("sequenced tag on a node not in sequenced mode")
	errTagExhaust  = errors.New("tag counter exhausted for this key")
	errNotMemberID = errors.New("not a member")
)

// checkTag validates a tag received from the network (a write or read
// repair, or a replica's answer). The zero tag is valid (never written).
func (n *Node) checkTag(t Tag) error {
	if t.IsZero() {
		return nil
	}
	if t.Counter > MaxCounter {
		return errTagCounter
	}
	if t.Writer&stampedBit != 0 {
		if !n.stampedTags() {
			return errTagStamped
		}
		return nil
	}
	if !n.isMember(t.Writer >> 48) {
		return errTagWriter
	}
	return nil
}

// stampedTags reports whether this node accepts sequenced (stamped) tags.
func (n *Node) stampedTags() bool { return n.cfg.OrderListen != "" }

func (n *Node) isMember(id uint64) bool {
	for _, m := range n.members {
		if m.id == id {
			return true
		}
	}
	return false
}

// dialFrom is the local address peer connections are made from: this
// node's peer IP when it listens on a specific one, so that peers can check
// that a connection claiming this node's id comes from its address.
func (n *Node) dialFrom() net.Addr {
	h, _, err := net.SplitHostPort(n.cfg.PeerListen)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(h)
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	return &net.TCPAddr{IP: ip}
}

// expectedIP is the address member id connects from, when the peer list
// tells it apart from every other member (nil otherwise: several members
// share one host, as in port mode on one machine).
func (n *Node) expectedIP(id uint64) net.IP {
	var want net.IP
	seen := map[string]int{}
	for _, m := range n.members {
		h, _, err := net.SplitHostPort(m.addr)
		if err != nil {
			return nil
		}
		seen[h]++
		if m.id == id {
			want = net.ParseIP(h)
		}
	}
	if want == nil || want.IsUnspecified() || seen[want.String()] != 1 {
		return nil
	}
	return want
}
