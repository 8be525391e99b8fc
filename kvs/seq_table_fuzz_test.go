package kvs

import (
	"testing"

	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
)

// FuzzStampTable drives the stamp table with arbitrary frames and
// connection events. Invariants: a stamp found for a byte is one announced
// for that byte of that flow in the current epoch (never another flow's,
// never a dropped epoch's, never made up); ranges stay sorted and disjoint;
// the table respects its bounds.
func FuzzStampTable(f *testing.F) {
	f.Add([]byte{0, 1, 1, 0, 2, 0, 0, 10, 5, 3, 0, 4, 6, 0, 7, 1, 0, 2})
	f.Add([]byte{1, 0, 2, 0, 0, 60, 9, 2, 0, 10, 20, 9, 6, 0, 15, 5, 0, 0, 4, 0, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var st SeqStats
		tb := newStampTable(&st)
		tb.maxFlows, tb.maxRanges, tb.maxTotal = 3, 4, 6
		flows := []orderwire.Flow{
			{ClientIP: [4]byte{10, 0, 0, 1}, ClientPort: 1, NodePort: 6379},
			{ClientIP: [4]byte{10, 0, 0, 1}, ClientPort: 2, NodePort: 6379},
			{ClientIP: [4]byte{10, 0, 0, 2}, ClientPort: 1, NodePort: 6379},
			{ClientIP: [4]byte{10, 0, 0, 2}, ClientPort: 1, NodePort: 6380},
		}
		type ann struct {
			epoch, g uint64
		}
		announced := map[orderwire.Flow]map[uint64][]ann{} // flow -> byte -> announcements
		epoch := uint64(0)
		attached := map[orderwire.Flow]int{}
		next := func() byte {
			if len(ops) == 0 {
				return 0
			}
			b := ops[0]
			ops = ops[1:]
			return b
		}
		for len(ops) > 0 {
			op := next() % 8
			fl := flows[int(next())%len(flows)]
			switch op {
			case 0:
				epoch = uint64(next() % 3)
				tb.hello(epoch)
			case 1:
				tb.open(fl)
			case 2:
				s := uint64(next() % 64)
				e := s + 1 + uint64(next()%16)
				g := uint64(next())
				tb.stamp(fl, s, e, g)
				if announced[fl] == nil {
					announced[fl] = map[uint64][]ann{}
				}
				for x := s; x < e; x++ {
					announced[fl][x] = append(announced[fl][x], ann{epoch, g})
				}
			case 3:
				tb.close(fl)
			case 4:
				tb.attach(fl)
				attached[fl]++
			case 5:
				if attached[fl] > 0 {
					tb.detach(fl)
					attached[fl]--
				}
			case 6:
				tb.consume(fl, uint64(next()%80))
			case 7:
				x := uint64(next() % 80)
				if g, res := tb.lookup(fl, x); res == stampFound {
					ok := false
					for _, a := range announced[fl][x] {
						if a.epoch == epoch && a.g == g {
							ok = true
						}
					}
					if !ok {
						t.Fatalf("byte %d of %v: found G %d, announced %v in epoch %d", x, fl, g, announced[fl][x], epoch)
					}
				}
			}
			tb.mu.Lock()
			if len(tb.flows) > tb.maxFlows {
				t.Fatalf("%d flows held", len(tb.flows))
			}
			sum := 0
			for _, fs := range tb.flows {
				sum += len(fs.ranges)
			}
			if sum != tb.total || sum > tb.maxTotal {
				t.Fatalf("ranges held %d, accounted %d, bound %d", sum, tb.total, tb.maxTotal)
			}
			for k, fs := range tb.flows {
				if len(fs.ranges) > tb.maxRanges {
					t.Fatalf("%v holds %d ranges", k, len(fs.ranges))
				}
				for i, r := range fs.ranges {
					if r.start >= r.end || i > 0 && fs.ranges[i-1].end > r.start {
						t.Fatalf("%v ranges not sorted and disjoint: %v", k, fs.ranges)
					}
				}
				if fs.conns < 0 {
					t.Fatalf("%v conns %d", k, fs.conns)
				}
			}
			tb.mu.Unlock()
		}
	})
}
