package ackmerge

import (
	"math/rand/v2"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// br makes a counting branch that acknowledged ack, advertised edge and
// sent the reply up to cov; fin >= 0 places its FIN there.
func br(ack, edge, cov uint32, fin int64) branch {
	b := branch{answered: true, acked: seqnum.Value(ack), edge: seqnum.Value(edge), cov: seqnum.Value(cov)}
	if fin >= 0 {
		b.fin, b.finAt = true, seqnum.Value(fin)
	}
	return b
}

func TestMergeMin(t *testing.T) {
	removed := br(1, 1, 1, -1)
	removed.removed = true
	unanswered := br(2, 2, 2, -1)
	unanswered.answered = false
	for _, tc := range []struct {
		name string
		br   []branch
		ok   bool
		want merged
	}{
		{"none", nil, false, merged{holder: -1}},
		{"none counting", []branch{removed, unanswered}, false, merged{holder: -1}},
		{"one", []branch{br(10, 20, 30, -1)}, true, merged{10, 20, 30, 30, 0}},
		{"minimum of each, removed ignored", []branch{removed, br(10, 25, 30, -1), br(12, 20, 28, -1), unanswered},
			true, merged{10, 20, 28, 28, 1}},
		{"holder is the first lowest ack", []branch{br(12, 20, 30, -1), br(10, 20, 30, -1), br(10, 20, 30, -1)},
			true, merged{10, 20, 30, 30, 1}},
		{"across wrap-around", []branch{br(0xfffffff0, 5, 0xfffffff0, -1), br(3, 8, 2, -1)},
			true, merged{0xfffffff0, 5, 0xfffffff0, 0xfffffff0, 0}},
		{"every FIN covered counts the FIN", []branch{br(10, 20, 30, 30), br(10, 20, 30, 30)},
			true, merged{10, 20, 30, 31, 0}},
		{"one branch still open: no FIN", []branch{br(10, 20, 30, 30), br(10, 20, 30, -1)},
			true, merged{10, 20, 30, 30, 0}},
		{"FINs beyond the minimum coverage", []branch{br(10, 20, 30, 30), br(10, 20, 25, 25)},
			true, merged{10, 20, 25, 25, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got merged
			ok := mergeMin(tc.br, &got)
			if ok != tc.ok || (ok && got != tc.want) || got.holder != tc.want.holder {
				t.Errorf("mergeMin = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestFinVote(t *testing.T) {
	for _, tc := range []struct {
		name    string
		br      []branch
		decided bool
		end     seqnum.Value
	}{
		{"no FIN yet", []branch{br(1, 1, 50, -1), br(1, 1, 60, -1)}, false, 0},
		{"FINs agree", []branch{br(1, 1, 50, 50), br(1, 1, 40, -1)}, false, 0},
		{"majority FIN wins", []branch{br(1, 1, 50, 50), br(1, 1, 50, 50), br(1, 1, 60, 60)}, true, 50},
		{"bytes past a FIN", []branch{br(1, 1, 50, 50), br(1, 1, 70, -1), br(1, 1, 70, -1)}, true, 50},
		{"open branches agree with the later FIN", []branch{br(1, 1, 50, 50), br(1, 1, 60, 60), br(1, 1, 55, -1)}, true, 60},
		{"tie waits for an open branch", []branch{br(1, 1, 50, 50), br(1, 1, 60, 60), br(1, 1, 10, -1)}, false, 0},
		{"tie with all closed: first live branch", []branch{br(1, 1, 60, 60), br(1, 1, 50, 50)}, true, 60},
		{"removed branches do not vote", func() []branch {
			r := br(1, 1, 60, 60)
			r.removed = true
			return []branch{r, br(1, 1, 50, 50), br(1, 1, 50, 50)}
		}(), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end, decided := finVote(tc.br)
			if decided != tc.decided || decided && end != tc.end {
				t.Errorf("finVote = %d, %v; want %d, %v", end, decided, tc.end, tc.decided)
			}
		})
	}
}

// TestQuorumInvariants checks the arithmetic on random branch sets: each
// minimum is attained by a counting branch and bounds all of them, the
// holder is the first with the lowest ack, and a decided FIN vote picks an
// end no other FIN offset out-votes, or the first live branch's end.
func TestQuorumInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := seqnum.Value(r.Uint32())
	for range 20000 {
		n := 1 + r.IntN(5)
		bs := make([]branch, n)
		for k := range bs {
			b := br(uint32(base)+r.Uint32N(8), uint32(base)+8+r.Uint32N(8), uint32(base)+r.Uint32N(8), -1)
			// As in an established flow: every live branch answered the
			// SYN; a removed one may not have.
			b.removed = r.IntN(5) == 0
			b.answered = !b.removed || r.IntN(2) == 0
			if b.answered && r.IntN(2) == 0 {
				b.fin, b.finAt = true, b.cov
			}
			bs[k] = b
		}
		var m merged
		ok := mergeMin(bs, &m)
		var counting []int
		for k := range bs {
			if bs[k].counts() {
				counting = append(counting, k)
			}
		}
		if ok != (len(counting) > 0) {
			t.Fatalf("mergeMin ok=%v with %d counting branches", ok, len(counting))
		}
		if !ok {
			continue
		}
		var seenAck, seenEdge, seenCov bool
		for _, k := range counting {
			b := &bs[k]
			if b.acked.LessThan(m.ack) || b.edge.LessThan(m.edge) || b.cov.LessThan(m.cov) {
				t.Fatalf("branch %d below the minimum: %+v vs %+v", k, b, m)
			}
			seenAck = seenAck || b.acked == m.ack
			seenEdge = seenEdge || b.edge == m.edge
			seenCov = seenCov || b.cov == m.cov
		}
		if !seenAck || !seenEdge || !seenCov || bs[m.holder].acked != m.ack || !bs[m.holder].counts() {
			t.Fatalf("minimum not attained or wrong holder: %+v over %+v", m, bs)
		}
		for _, k := range counting {
			if k < m.holder && bs[k].acked == m.ack {
				t.Fatalf("holder %d is not the first lowest ack (%d)", m.holder, k)
			}
		}
		if end, decided := finVote(bs); decided {
			win := votes(bs, end)
			if tieBreak := bs[firstLive(bs)]; tieBreak.fin && tieBreak.finAt == end {
				continue // a tie with every branch closed goes to the first live one
			}
			for _, k := range counting {
				if bs[k].fin && votes(bs, bs[k].finAt) > win {
					t.Fatalf("FIN at %d out-votes the winner %d: %+v", bs[k].finAt, end, bs)
				}
			}
			if win == 0 {
				t.Fatalf("winning end %d has no vote: %+v", end, bs)
			}
		}
	}
}
