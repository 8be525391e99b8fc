package kvs

// One-round writes of sequenced mode: the tag comes from the middlebox's
// stamp (docs/design-sequencer.md), so ABD's query phase is skipped and the
// op starts in its store phase.

// startStamped begins a one-round write of (key, val) with tag t, which the
// sequencer made unique and real-time ordered: phase 2 only.
func (c *coordinator) startStamped(o *op, kind opKind, key, val []byte, t Tag) {
	o.mu.Lock()
	o.kind = kind
	o.key = append(o.key[:0], key...)
	o.val = append(o.val[:0], val...)
	o.gen++
	o.acks, o.fails, o.bestCount = 0, 0, 0
	o.err = nil
	var flags byte
	var v []byte
	if kind == opDel {
		flags = flagTombstone
	} else {
		v = o.val
	}
	o.best, o.bestFlags = t, flags
	o.bestVal = o.bestVal[:0]
	o.phase = phaseStore
	id := opID(o)
	k := o.key
	o.mu.Unlock()
	c.sendWrite(id, k, t, flags, v)
}
