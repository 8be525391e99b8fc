package middlebox

import "time"

// Timer passes run on the sweeper goroutine (tests call Expire directly).
// Each takes timers, then flows; the packets it makes go to timers.outs
// and are written when its buffers run short (so a pass delivers every
// packet it makes, however many flows need one) and after flows is
// released.

// Expire removes flows idle for longer than the idle timeout and closed
// flows whose linger has passed, as of now. It returns how many it
// removed. The sweeper calls it periodically; tests call it directly.
func (m *Middlebox) Expire(now time.Time) int {
	nu := now.UnixNano()
	idle := int64(m.cfg.IdleTimeout)
	m.timers.Lock() // owns the timer buffers until they are written
	defer m.timers.Unlock()
	m.flows.Lock()
	m.timers.outs = m.timers.outs[:0]
	ho := m.expireHalfOpen(nu)
	m.c.halfOpenExpired.Add(uint64(ho))
	removed := 0
	t := m.flows.tab
	for i := range t.slab {
		f := &t.slab[i]
		if !f.used {
			continue
		}
		if nu-f.last >= idle || (f.kind == kindAnycast && f.state == stClosing && nu >= f.linger) {
			m.removeFlow(int32(i))
			removed++
			continue
		}
		if f.kind == kindForked {
			if len(m.timers.pool.free) < m.timers.reserve {
				m.flushTimerOutput()
			}
			m.tickFork(int32(i), now)
		}
	}
	m.c.flowsExpired.Add(uint64(removed))
	removed += ho
	if m.flows.det != nil {
		m.detectorTimers(now)
	}
	if m.life != nil {
		m.lifeTick(now)
	}
	m.applyDeadNodes(now)
	m.flows.Unlock()
	m.flushTimerOutput()
	return removed
}

// probeTimers feeds queued probe results to the detector and applies its
// decisions, without the full flow-table sweep of Expire.
func (m *Middlebox) probeTimers(now time.Time) {
	m.timers.Lock()
	defer m.timers.Unlock()
	m.flows.Lock()
	m.timers.outs = m.timers.outs[:0]
	if m.flows.det != nil {
		m.detectorTimers(now)
	}
	m.applyDeadNodes(now)
	m.flows.Unlock()
	m.flushTimerOutput()
}

// flushTimerOutput writes what a timer pass produced so far and returns
// its buffers (under timers).
func (m *Middlebox) flushTimerOutput() {
	tm := &m.timers
	if len(tm.outs) > 0 {
		m.write(tm.outs)
		tm.outs = tm.outs[:0]
	}
	tm.pool.releaseAll()
	tm.rstPool = append(tm.rstPool, tm.rstInUse...)
	tm.rstInUse = tm.rstInUse[:0]
}

// sweeper runs timer passes: Expire every interval, probeTimers when
// woken (probe results, a node marked dead).
func (m *Middlebox) sweeper() {
	defer close(m.sweepDone)
	iv := min(time.Second, m.cfg.FinLinger/2, m.cfg.IdleTimeout/4)
	if len(m.cfg.MulticastPorts) > 0 {
		iv = min(iv, m.cfg.TickInterval)
	}
	iv = max(iv, 10*time.Millisecond)
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-m.closed:
			return
		case <-t.C:
			m.Expire(m.cfg.Now())
		case <-m.wake:
			m.probeTimers(m.cfg.Now())
		}
	}
}
