package kvs

import (
	"errors"
	"fmt"
)

// openStorage loads the node's identity, opens its store (moving a damaged
// one aside), and decides whether it starts as a voter: only when its
// identity says it was one and the store still holds the same data set.
func (n *Node) openStorage() error {
	cfg := n.cfg
	dir := cfg.Dir
	if cfg.InMemory {
		dir = ""
	}
	ident, found, err := loadIdentity(dir)
	if err != nil {
		return err
	}
	n.ident = ident
	mh := membershipHash(n.members)
	if found {
		if err := checkIdentity(ident.get(), cfg, mh); err != nil {
			return err
		}
	}
	opts := StoreOptions{Dir: cfg.Dir, Sync: cfg.Sync, InMemory: cfg.InMemory, Queue: cfg.StoreQueue}
	damaged := false
	st, err := OpenStore(opts)
	if err != nil && dir != "" && isDamage(err) {
		n.stats.DamageOpen.Add(1)
		moved, qerr := quarantine(dir)
		if qerr != nil {
			return fmt.Errorf("%w (and moving it aside failed: %v)", err, qerr)
		}
		n.log.Error("store damaged at open: moved aside, rebuilding from peers as a learner", "err", err, "moved_to", moved)
		damaged = true
		st, err = OpenStore(opts)
	}
	if err != nil {
		return err
	}
	n.store = st
	st.onDamage = func(err error) { n.demote(err) }
	id := ident.get()
	dataID, err := st.GetMeta("data-id")
	if err != nil {
		st.Close()
		return errors.Join(errDamaged, err)
	}
	intact := !damaged && id.DataID != "" && dataID == id.DataID
	n.voter.Store(found && id.Voter && intact)
	if found && id.Voter && !intact {
		n.mustRepair.Store(true)
		n.log.Warn("data directory lost its data (damaged, emptied or replaced): starting as a learner that repairs from a quorum", "dir", dir)
	}
	if err := ident.update(func(i *identity) {
		i.Cluster, i.NodeID, i.Membership = cfg.Cluster, cfg.ID, mh
	}); err != nil {
		st.Close()
		return err
	}
	return nil
}
