package kvs

// Learners (docs/design-kvssafety.md). A node votes — its answers count
// toward read and write quorums — only while it holds every write that was
// acknowledged by a quorum it belonged to. A node whose data directory is
// new, empty or damaged starts as a learner: it receives and stores writes
// and coordinates clients, but answers peers with statusLearner, which
// coordinators count as a failed replica. It becomes a voter by one of two
// paths:
//
//   - never a voter: n-q+1 other members answer that they never saw it
//     become a voter. It then cannot be in any write quorum, and joins as
//     it is (this is also how a new cluster bootstraps).
//   - repair: some member saw it become a voter (or its own identity says
//     so): it first pulls every record from n-q+1 voters (a full scan
//     applied with the usual higher-tag-wins rule). Every write it may have
//     acknowledged is on a write quorum, q-1 of whose members are among
//     the n-1 others, so one of the sources holds it.
//
// Either way it then registers as a voter with q-1 other members (each
// persists that before answering), so any later quorum of answers includes
// one that remembers, and only then starts voting.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// State names reported on /ready, INFO and metrics.
const (
	stateVoter     = "voter"
	stateLearner   = "learner"
	stateRepairing = "repairing"
)

const scanBatch = 64 << 10

// state is the node's voting state for reports.
func (n *Node) state() string {
	switch {
	case n.voter.Load():
		return stateVoter
	case n.repairing.Load():
		return stateRepairing
	}
	return stateLearner
}

// Voter reports whether the node counts toward quorums.
func (n *Node) Voter() bool { return n.voter.Load() }

// State is "voter", "learner" (waiting to learn whether it must repair) or
// "repairing" (pulling records from a quorum of voters).
func (n *Node) State() string { return n.state() }

// learnerLoop tries to become a voter until it succeeds or the node stops.
func (n *Node) learnerLoop() {
	defer n.wg.Done()
	for {
		err := n.tryJoin()
		if err == nil {
			return
		}
		n.log.Debug("learner: not a voter yet", "err", err)
		select {
		case <-n.closing:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type peerStatus struct {
	p           *peerClient
	voter, know bool
}

func (n *Node) statuses(op byte) []peerStatus {
	var mu sync.Mutex
	var out []peerStatus
	var wg sync.WaitGroup
	payload := binary.BigEndian.AppendUint64([]byte{op}, uint64(n.cfg.ID))
	for _, p := range n.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := p.call(kindStatus, payload, time.Second)
			if err != nil || r.status != statusOK {
				return
			}
			mu.Lock()
			out = append(out, peerStatus{p: p, voter: r.flags&flagVoter != 0, know: r.flags&flagKnowsYou != 0})
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// tryJoin runs one attempt of the learner's way to a vote.
func (n *Node) tryJoin() error {
	if n.voter.Load() {
		return nil
	}
	// need answers (never a voter) or sources (repair) meet every set that
	// matters among the n-1 other members: q-1 registrations, or a write
	// quorum minus this node (q-1 members): need + q-1 > n-1.
	need := n.size - n.quorum + 1
	st := n.statuses(statusQuery)
	known := n.ident.get().Voter || n.mustRepair.Load()
	for _, s := range st {
		known = known || s.know
	}
	if !known {
		if len(st) < need {
			return fmt.Errorf("%d of %d peers answered, need %d to know this node was never a voter", len(st), len(n.peers), need)
		}
	} else {
		if !n.mustRepair.Load() {
			n.mustRepair.Store(true)
			n.log.Warn("learner: this node was a voter and lost data; repairing from a quorum of voters")
		}
		var voters []*peerClient
		for _, s := range st {
			if s.voter {
				voters = append(voters, s.p)
			}
		}
		if len(voters) < need {
			return fmt.Errorf("%d voters reachable, a repair needs %d", len(voters), need)
		}
		n.repairing.Store(true)
		start := time.Now()
		var recs int64
		for _, p := range voters[:need] {
			c, err := n.syncFrom(p)
			recs += c
			if err != nil {
				n.repairing.Store(false)
				return fmt.Errorf("repair from %s: %w", p.addr, err)
			}
		}
		if n.learnRep.takeOverflow() {
			n.repairing.Store(false)
			return errLearnRepairsOverflow
		}
		n.log.Info("learner: repaired from voters", "voters", need, "records", recs, "took", time.Since(start))
	}
	if err := n.register(); err != nil {
		n.repairing.Store(false)
		return err
	}
	return n.becomeVoter()
}

// register makes q-1 other members persist that this node votes.
func (n *Node) register() error {
	need := n.quorum - 1
	if need <= 0 {
		return nil
	}
	if got := len(n.statuses(statusRegister)); got < need {
		return fmt.Errorf("registered as a voter with %d members, need %d", got, need)
	}
	return nil
}

func (n *Node) becomeVoter() error {
	id := newDataID()
	if err := n.store.PutMeta("data-id", id); err != nil {
		return err
	}
	if err := n.ident.update(func(i *identity) { i.Voter, i.DataID = true, id }); err != nil {
		return err
	}
	n.mustRepair.Store(false)
	n.repairing.Store(false)
	n.voter.Store(true)
	n.learnRep.reset()
	n.stats.Promotions.Add(1)
	if len(n.peers) > 0 {
		n.log.Info("node is a voter")
	}
	return nil
}

// demote stops voting after local damage; the learner loop repairs.
func (n *Node) demote(why error) {
	n.mustRepair.Store(true)
	if n.voter.CompareAndSwap(true, false) {
		n.log.Error("storage damage: this node stops voting and repairs from its peers", "err", why)
		n.store.PutMeta("data-id", "") // a restart repairs too
		n.wg.Add(1)
		go n.learnerLoop()
	}
}

// syncSink counts a batch of local writes.
type syncSink struct {
	wg     sync.WaitGroup
	failed atomic.Bool
}

func (s *syncSink) writeDone(_ uint64, ok bool, _ Tag) {
	if !ok {
		s.failed.Store(true)
	}
	s.wg.Done()
}

// syncFrom pulls every record from peer p and applies it locally (a record
// is stored only if its tag is higher than the local one). It is the state
// transfer used by learners, and reusable for any catch-up between stores.
func (n *Node) syncFrom(p *peerClient) (int64, error) {
	payload := []byte{0}
	var count int64
	for {
		r, err := p.call(kindScan, payload, 10*time.Second)
		if err != nil {
			return count, err
		}
		if r.status != statusOK {
			return count, errors.New("source refused the scan (not a voter, or damaged)")
		}
		var sink syncSink
		b := r.val
		var rec scanRecord
		var last []byte
		for len(b) > 0 {
			if b, err = nextScanRecord(b, &rec); err != nil {
				return count, err
			}
			if err := n.checkTag(rec.tag); err != nil {
				return count, fmt.Errorf("record with a bad tag: %w", err)
			}
			last = rec.key
			if n.learnRep.covers(rec.key, rec.tag) {
				continue // a verify pass repaired it here since (learner_repairs.go)
			}
			sink.wg.Add(1)
			n.store.PutBulk(rec.key, rec.tag, rec.flags, rec.val, 0, &sink)
			count++
		}
		sink.wg.Wait()
		if sink.failed.Load() {
			return count, errors.New("local store failed")
		}
		if r.flags&flagScanMore == 0 || last == nil {
			return count, nil
		}
		payload = append([]byte{1}, last...)
	}
}

// serveStatus answers kindStatus: op and asker id in the payload.
func (n *Node) serveStatus(payload []byte, authID uint64) (byte, byte) {
	if len(payload) != 9 {
		return statusErr, 0
	}
	asker := binary.BigEndian.Uint64(payload[1:])
	if (authID != 0 && asker != authID) || !n.isMember(asker) {
		return statusErr, 0
	}
	if payload[0] == statusRegister {
		if err := n.ident.update(func(i *identity) {
			for _, v := range i.KnownVoters {
				if v == asker {
					return
				}
			}
			i.KnownVoters = append(i.KnownVoters, asker)
		}); err != nil {
			return statusErr, 0
		}
	}
	var f byte
	if n.voter.Load() {
		f |= flagVoter
	}
	if n.ident.knows(asker) {
		f |= flagKnowsYou
	}
	return statusOK, f
}

// serveScan answers kindScan; only voters answer.
func (n *Node) serveScan(payload []byte, dst []byte) (byte, byte, []byte) {
	if !n.voter.Load() || len(payload) < 1 {
		return statusErr, 0, dst
	}
	out, more, err := n.store.Scan(payload[1:], payload[0] == 0, scanBatch, dst)
	if err != nil {
		return statusErr, 0, dst
	}
	var f byte
	if more {
		f = flagScanMore
	}
	return statusOK, f, out
}

// ---- request/response calls on a peer connection ----

const callBit = 1 << 62 // ids of calls (coordinator op ids are below 2^46)

// call sends one kindStatus or kindScan request and waits for its answer.
func (p *peerClient) call(kind byte, payload []byte, timeout time.Duration) (response, error) {
	ch := make(chan response, 1)
	done, err := p.startCall(ch, func(b []byte, id uint64) []byte { return appendReadReq(b, kind, id, payload) })
	if err != nil {
		return response{}, err
	}
	defer done()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-t.C:
		return response{}, errors.New("timeout")
	case <-p.n.closing:
		return response{}, errors.New("closing")
	}
}

// startCall sends the request frame appendReq builds with a fresh call id;
// the answer is sent on ch without blocking (ch needs room for it). done
// forgets the call (a later answer is dropped); it must be called once.
func (p *peerClient) startCall(ch chan response, appendReq func(b []byte, id uint64) []byte) (done func(), err error) {
	w := p.w.Load()
	if w == nil {
		return nil, errors.New("not connected")
	}
	id := callBit | p.callSeq.Add(1)
	p.callMu.Lock()
	if p.calls == nil {
		p.calls = map[uint64]chan response{}
	}
	p.calls[id] = ch
	p.callMu.Unlock()
	done = func() {
		p.callMu.Lock()
		delete(p.calls, id)
		p.callMu.Unlock()
	}
	b, ok := w.lock()
	if !ok {
		done()
		return nil, errors.New("not connected")
	}
	w.unlock(appendReq(b, id))
	return done, nil
}

// deliverCall hands a call's answer (val copied) to its waiter.
func (p *peerClient) deliverCall(r *response) {
	p.callMu.Lock()
	ch := p.calls[r.id]
	p.callMu.Unlock()
	if ch == nil {
		return
	}
	c := *r
	c.val = append([]byte(nil), r.val...)
	select {
	case ch <- c:
	default:
	}
}
