package failover

// Current DCs and the last-live-DC hold: with a DC lifecycle (Lifecycle),
// a DC that is reachable but out of sync (joining) is no refuge: taking
// the last *current* DC down would leave only stale ones, so the hold
// protects the last live DC that is current, and a joining DC may go down
// like any other.

// SetCurrent tells the detector whether dc is current (every DC is, until
// told otherwise). Unknown DCs are ignored.
func (d *Detector[K]) SetCurrent(dc DCID, current bool) {
	if d.validDC(dc) {
		d.dcs[dc].stale = !current
	}
}

// lastCurrent reports whether taking dc's last live node down would leave
// no live current DC: dc has one live node, is current, and no other
// current DC has a live node.
func (d *Detector[K]) lastCurrent(dc DCID) bool {
	ds := &d.dcs[dc]
	if ds.live != 1 || ds.stale {
		return false
	}
	for i := range d.dcs {
		if DCID(i) != dc && d.dcs[i].live > 0 && !d.dcs[i].stale {
			return false
		}
	}
	return true
}
