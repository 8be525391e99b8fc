package kvs

// Verify pass, this DC's other replicas (docs/design-lifecycle.md,
// "Verify pass (store side)"): the driver compares the source node's store
// with its own and with each of its DC peers', so a record that differs on
// one replica of this DC only (a replica the driver is not) is found too.
// Each peer is read on a catch-up connection of its own (a peer's digest of
// a large range takes a while, and the peer connection carries the live
// writes); its digests and lists are asked with the source's, in the same
// round trip. A key any replica differs on is repaired at this DC's quorum
// (every replica gets the repair and applies Store.PutRepair's rule to its
// own record). A peer that cannot be reached or fails mid-pass is left out
// of the rest of the pass (logged); the pass goes on with the others.

import (
	"bytes"
	"fmt"
)

// dialPeers opens a catch-up connection to each DC peer.
func (v *verifier) dialPeers() {
	for _, p := range v.n.peers {
		c, err := v.n.dialCatchup(v.ctx, p.addr, nil)
		if err != nil {
			v.n.log.Warn("catch-up: verify leaves out a DC peer it cannot reach", "peer", p.addr, "err", err)
			continue
		}
		v.peers = append(v.peers, &catchupConn{addr: p.addr, c: c, fr: newFrameReader(c, maxCatchupFrame), nextID: 1})
	}
}

func (v *verifier) closePeers() {
	for _, cc := range v.peers {
		if cc != nil {
			cc.c.Close()
		}
	}
	v.peers = nil
}

// dropPeer leaves peer i out of the rest of the pass.
func (v *verifier) dropPeer(i int, err error) {
	v.n.log.Warn("catch-up: verify leaves out a DC peer that failed", "peer", v.peers[i].addr, "err", err)
	v.peers[i].c.Close()
	v.peers[i] = nil
}

// peersSend sends reqs to every peer still in the pass and returns each
// one's first request id (ok false: left out).
func (v *verifier) peersSend(reqs [][]byte) []peerPending {
	out := make([]peerPending, len(v.peers))
	for i, cc := range v.peers {
		if cc == nil {
			continue
		}
		first, err := v.send(cc, reqs)
		if err != nil {
			v.dropPeer(i, err)
			continue
		}
		out[i] = peerPending{first: first, ok: true}
	}
	return out
}

type peerPending struct {
	first uint64
	ok    bool
}

// peersRecv reads the n answers of each peer sent to (nil for a peer left
// out).
func (v *verifier) peersRecv(pending []peerPending, n int) [][]response {
	out := make([][]response, len(pending))
	for i, p := range pending {
		if !p.ok || v.peers[i] == nil {
			continue
		}
		ans, err := v.recv(v.peers[i], p.first, n)
		if err != nil {
			v.dropPeer(i, err)
			continue
		}
		out[i] = ans
	}
	return out
}

// comparePeers lists sub on every peer and queues, to be repaired
// whatever this node holds, each key a peer holds otherwise than the
// source node's list remote says (a peer's record above the bound is a
// newer write and is left alone, as this node's own). A peer with more
// records in sub than one list answer holds is listed again from its last
// key, alone, until the end of sub.
func (v *verifier) comparePeers(sub keyRange, remote []listEntry) error {
	if len(v.peers) == 0 {
		return nil
	}
	for i, ans := range v.peersRecv(v.peersSend([][]byte{listReq(sub)}), 1) {
		start := sub.start
		for ans != nil {
			entries, err := parseList(ans[0].val)
			if err != nil {
				v.dropPeer(i, fmt.Errorf("verify list: %w", err))
				break
			}
			end := sub.end
			more := ans[0].flags&flagScanMore != 0 && len(entries) > 0
			if more {
				end = append(append([]byte(nil), entries[len(entries)-1].key...), 0)
			}
			if err := v.comparePeerList(entries, remote, start, end); err != nil {
				return err
			}
			if !more {
				break
			}
			// Far more records here than on the source: the rest of sub.
			start = end
			cc := v.peers[i]
			first, err := v.send(cc, [][]byte{listReq(keyRange{start, sub.end})})
			if err == nil {
				ans, err = v.recv(cc, first, 1)
			}
			if err != nil {
				v.dropPeer(i, err)
				break
			}
		}
	}
	return nil
}

// comparePeerList compares a peer's list entries, which cover [start,
// end) of the range (end nil: to its end), with the source's list remote
// of the range, and queues the keys that differ.
func (v *verifier) comparePeerList(entries, remote []listEntry, start, end []byte) error {
	held := make(map[string]listEntry, len(entries))
	for _, e := range entries {
		held[string(e.key)] = e
	}
	for _, re := range remote {
		if bytes.Compare(re.key, start) < 0 {
			continue
		}
		if end != nil && bytes.Compare(re.key, end) >= 0 {
			break
		}
		pe, ok := held[string(re.key)]
		delete(held, string(re.key))
		if !v.differs(re, pe, ok) {
			continue
		}
		if err := v.queueForced(re.key); err != nil {
			return err
		}
	}
	for k, pe := range held { // the source node has no record
		if v.extra(pe) {
			if err := v.queueForced([]byte(k)); err != nil {
				return err
			}
		}
	}
	return nil
}

// queueForced queues key for a fetch and a repair even if this node's own
// record equals the source's.
func (v *verifier) queueForced(key []byte) error {
	v.force[string(key)] = true
	return v.queue(key)
}
