package sequencer

import (
	"encoding/binary"
	"testing"
	"time"
)

// FuzzFlow drives a Flow with arbitrary segments, acknowledgements and
// clock moves and checks its invariants after every step: ranges ascending,
// contiguous, between the acknowledged offset and the highest one, strictly
// increasing stamps, bounded in number, and no byte stamped twice.
func FuzzFlow(f *testing.F) {
	f.Add(uint32(1000), []byte{0, 0, 0, 0, 10, 0, 0, 1, 0, 0, 0, 0, 20, 0})
	f.Add(uint32(0xfffffff0), []byte{0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0x40, 0x30, 0, 1, 0, 0, 0, 0x20, 0, 0, 2})
	f.Fuzz(func(t *testing.T, isn uint32, ops []byte) {
		var fl Flow
		fl.Reset(isn, 16, time.Duration(isn%4)*time.Second)
		now := int64(1 << 40)
		c := NewClock(0, now, 0)
		c.Persisted(c.Last() + 1<<30)
		stamped := map[uint64]uint64{} // offset -> G (offsets below 1<<12)
		var lastG uint64
		for len(ops) >= 7 {
			op, rel, n := ops[0], binary.BigEndian.Uint32(ops[1:5]), binary.BigEndian.Uint16(ops[5:7])
			ops = ops[7:]
			seq := isn + 1 + rel
			switch op % 4 {
			case 0, 1:
				r, ok, err := fl.Observe(seq, int(n), c, now)
				if err != nil {
					if err != ErrTooManyRanges || len(fl.Ranges()) < 16 {
						t.Fatalf("Observe: %v with %d ranges", err, len(fl.Ranges()))
					}
					continue
				}
				if ok {
					if r.G <= lastG || r.Start >= r.End {
						t.Fatalf("bad range %+v after G %d", r, lastG)
					}
					lastG = r.G
					for o := r.Start; o < r.End && o < 1<<12; o++ {
						if g, dup := stamped[o]; dup {
							t.Fatalf("byte %d stamped twice: %d then %d", o, g, r.G)
						}
						stamped[o] = r.G
					}
				}
			case 2:
				fl.Ack(seq, now)
			case 3:
				now += int64(rel) - 1<<31 // forwards or backwards
			}
			rs := fl.Ranges()
			unacked := 0
			for _, r := range rs {
				if r.End > fl.Acked() {
					unacked++
				}
			}
			if unacked > 16 || len(rs) > 16 {
				t.Fatalf("%d ranges, %d unacknowledged, bound 16", len(rs), unacked)
			}
			if fl.Acked() > fl.High() {
				t.Fatalf("acked %d above high %d", fl.Acked(), fl.High())
			}
			for i, r := range rs {
				if r.Start >= r.End || r.End > fl.High() {
					t.Fatalf("range %+v empty or above high %d", r, fl.High())
				}
				if i > 0 && (rs[i-1].End != r.Start || rs[i-1].G >= r.G) {
					t.Fatalf("ranges %+v, %+v not contiguous and increasing", rs[i-1], r)
				}
			}
			if len(rs) > 0 && rs[len(rs)-1].End != fl.High() {
				t.Fatalf("last range ends at %d, high is %d", rs[len(rs)-1].End, fl.High())
			}
		}
		st := fl.Export()
		var g Flow
		g.Restore(st, 16, 0)
		if g.High() != fl.High() || g.Acked() != fl.Acked() || len(g.Ranges()) != len(fl.Ranges()) {
			t.Fatalf("Restore(Export()) differs: %+v vs %+v", g.Export(), st)
		}
	})
}
