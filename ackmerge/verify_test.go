package ackmerge

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
)

// Reply verification (verify.go): one test per rule, then a property
// harness with random segmentation, loss, duplication and reordering per
// branch.

func (h *harness) push(k int, rs uint32, data string) []seg {
	return h.replyFl(k, rs, []byte(data), 0, 500, packet.FlagPSH)
}

func (h *harness) removed(k int) (Event, bool) {
	for _, e := range h.events {
		if e.Kind == EvBranchRemoved && e.Branch == k {
			return e, true
		}
	}
	return Event{}, false
}

func clientData(segs []seg) []byte {
	var b []byte
	for _, s := range segs {
		if s.To == ToClient {
			b = append(b, s.Data...)
		}
	}
	return b
}

// Identical replies: compared at the quiescent point, no removal.
func TestVerifyIdenticalRepliesAgree(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	for i := uint32(0); i < 3; i++ {
		for k := 0; k < 3; k++ {
			h.push(k, 5*i, "+OK\r\n")
		}
	}
	st := h.f.Stats()
	if st.RepliesVerified != 3 || st.ReplyMismatches != 0 || h.f.Live() != 3 {
		t.Fatalf("stats %+v live %d", st, h.f.Live())
	}
}

// Three branches, one odd of the same length: it is removed on the first
// forked read, with CauseReplyMismatch and the offset of the differing
// range; its bytes never reach the client.
func TestVerifyOddBranchRemovedBeforeForwarding(t *testing.T) {
	for odd := 0; odd < 3; odd++ {
		t.Run(fmt.Sprint("odd=", odd), func(t *testing.T) {
			h := newHarness(t, 3, Config{})
			h.open()
			for k := 0; k < 3; k++ {
				h.push(k, 0, "+OK\r\n")
			}
			var got []byte
			for k := 0; k < 3; k++ {
				r := "$1\r\nv\r\n"
				if k == odd {
					r = "$1\r\nx\r\n" // a corrupt record in one DC
				}
				got = append(got, clientData(h.push(k, 5, r))...)
			}
			ev, ok := h.removed(odd)
			if !ok || ev.Cause != CauseReplyMismatch || ev.Offset != 5 {
				t.Fatalf("odd branch %d: removal %v %v; events %v", odd, ev, ok, h.events)
			}
			if h.f.Live() != 2 || h.f.Stats().ReplyMismatches != 1 {
				t.Fatalf("live %d stats %+v", h.f.Live(), h.f.Stats())
			}
			if bytes.Contains(got, []byte("x")) {
				t.Fatalf("client got the odd reply: %q", got)
			}
			// The survivors' retransmission reaches the client.
			k := (odd + 1) % 3
			if d := clientData(h.push(k, 0, "+OK\r\n$1\r\nv\r\n")); string(d) != "+OK\r\n$1\r\nv\r\n" {
				t.Fatalf("retransmission forwarded %q", d)
			}
		})
	}
}

// Two branches that differ: a tie. The branch later in the flow's branch
// order goes (branch 0 is the most preferred DC), whichever answered
// first and whichever is wrong.
func TestVerifyTieRemovesLaterBranch(t *testing.T) {
	for _, first := range []int{0, 1} {
		h := newHarness(t, 2, Config{})
		h.open()
		h.push(first, 0, "+OK\r\n")
		h.push(1-first, 0, "+OX\r\n")
		if ev, ok := h.removed(1); !ok || ev.Cause != CauseReplyMismatch {
			t.Fatalf("first=%d: branch 1 not removed: %v", first, h.events)
		}
		if _, ok := h.removed(0); ok || h.f.Live() != 1 {
			t.Fatalf("first=%d: branch 0 removed too: %v", first, h.events)
		}
		// The last branch is never compared (nor removed) again.
		h.push(0, 5, "anything")
		if h.f.Live() != 1 || h.f.Stats().ReplyMismatches != 1 {
			t.Fatalf("first=%d: live %d stats %+v", first, h.f.Live(), h.f.Stats())
		}
	}
}

// Replies of different lengths (a stale DC answers nil where the others
// answer the value) are found when a later reply passes the point where
// the longer one stopped.
func TestVerifyDifferentLengthsFound(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	h.push(0, 0, "$1\r\nv\r\n")
	h.push(1, 0, "$-1\r\n") // stale
	h.push(2, 0, "$1\r\nv\r\n")
	if h.f.Live() != 3 {
		t.Fatalf("removed before any comparable point: %v", h.events)
	}
	h.push(0, 7, "+OK\r\n")
	h.push(1, 5, "+OK\r\n") // passes 7, where the others stopped
	h.push(2, 7, "+OK\r\n")
	if ev, ok := h.removed(1); !ok || ev.Cause != CauseReplyMismatch || ev.Offset != 0 {
		t.Fatalf("stale branch not removed: %v", h.events)
	}
	// Two branches: the later one's bytes are compared with the held copy
	// of the first one's before they are forwarded (hold_check.go), so
	// the tie is settled at once, whichever answered first, and the
	// client gets only branch 0's reply.
	for _, first := range []int{0, 1} {
		h = newHarness(t, 2, Config{})
		h.open()
		r := [2]string{"$-1\r\n", "$1\r\nv\r\n"}
		got := clientData(h.push(first, 0, r[first]))
		got = append(got, clientData(h.push(1-first, 0, r[1-first]))...)
		ev, ok := h.removed(1)
		if !ok || ev.Cause != CauseReplyMismatch || ev.Offset > 1 || ev.Peer != 0 || h.f.Stats().ReplyMismatches != 1 {
			t.Fatalf("first=%d: different lengths not settled at once: %v %+v", first, h.events, h.f.Stats())
		}
		if string(got) != r[0] {
			t.Fatalf("first=%d: client got %q, want branch 0's %q", first, got, r[0])
		}
	}
}

// The offset is that of the first range that differs: past the last point
// where the branches agreed, within a chunk.
func TestVerifyOffsetAfterLastAgreement(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	for i, r := range []string{"+OK\r\n", "+OK\r\n", ":1\r\n"} {
		for k := 0; k < 3; k++ {
			h.push(k, uint32(5*i), r)
		}
	}
	h.push(0, 14, "$2\r\nab\r\n")
	h.push(1, 14, "$2\r\nab\r\n")
	h.push(2, 14, "$2\r\naX\r\n")
	if ev, ok := h.removed(2); !ok || ev.Offset != 14 {
		t.Fatalf("removal %v, want offset 14: %v", ev, h.events)
	}
}

// Holes: a branch whose segment was lost (the client got those bytes from
// another branch's copy, so it is never retransmitted) cannot hash that
// chunk: unverified, never a mismatch. It verifies again from the next
// chunk on.
func TestVerifyHoleIsUnverifiedNotMismatch(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	stream := make([]byte, 3*verifyChunk)
	for i := range stream {
		stream[i] = byte(i * 7)
	}
	send := func(k, from, to int) {
		h.replyFl(k, uint32(from), stream[from:to], 0, 500, 0)
	}
	send(0, 0, 3*verifyChunk)
	send(1, 0, 1000)
	// 1000..2000 lost on the way from branch 1.
	send(1, 2000, 3*verifyChunk)
	// A late copy of the hole, and a retransmission overlapping hashed
	// bytes: neither is hashed again.
	send(1, 1000, 2000)
	send(1, 500, 2*verifyChunk)
	st := h.f.Stats()
	if st.ReplyMismatches != 0 || h.f.Live() != 2 {
		t.Fatalf("hole caused a mismatch: %+v %v", st, h.events)
	}
	if st.RepliesUnverified != 1 || st.RepliesVerified != 2 {
		t.Fatalf("want chunk 0 unverified and chunks 1, 2 verified: %+v", st)
	}
	// A difference in a chunk branch 1 hashed contiguously is found.
	h = newHarness(t, 2, Config{})
	h.open()
	send(0, 0, 2*verifyChunk)
	send(1, 0, 1000)
	bad := bytes.Clone(stream[2000 : 2*verifyChunk])
	bad[verifyChunk+10-2000] ^= 1
	h.replyFl(1, 2000, bad, 0, 500, 0)
	if ev, ok := h.removed(1); !ok || ev.Offset != verifyChunk {
		t.Fatalf("difference after the hole not found at %d: %v", verifyChunk, h.events)
	}
}

// Memory is bounded: a branch far ahead opens at most verifySlots points;
// the chunks past them are unverified, not kept.
func TestVerifyFarAheadBranchBounded(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	const chunks = 100
	data := make([]byte, 1000)
	for off := 0; off < chunks*verifyChunk; off += len(data) {
		h.replyFl(0, uint32(off), data, 0, 500, packet.FlagPSH)
		if h.f.ver.n > verifySlots {
			t.Fatalf("%d slots pending", h.f.ver.n)
		}
	}
	if h.f.ver.n != verifySlots {
		t.Fatalf("%d slots pending, want the table full (%d)", h.f.ver.n, verifySlots)
	}
	for off := 0; off < chunks*verifyChunk; off += len(data) {
		h.replyFl(1, uint32(off), data, 0, 500, packet.FlagPSH)
	}
	st := h.f.Stats()
	if st.ReplyMismatches != 0 || h.f.ver.n != 0 {
		t.Fatalf("stats %+v, %d pending", st, h.f.ver.n)
	}
	if st.RepliesVerified < verifySlots-verifyPartials || st.RepliesUnverified < chunks-verifySlots {
		t.Fatalf("want the first %d chunks verified and the rest unverified: %+v", verifySlots, st)
	}
}

// Verification off: different replies pass (and the FIN vote still
// catches a different end, rules_test.go).
func TestVerifyOff(t *testing.T) {
	h := newHarness(t, 2, Config{NoVerify: true})
	h.open()
	h.push(0, 0, "+OK\r\n")
	h.push(1, 0, "+OX\r\n")
	if h.f.Live() != 2 || h.f.Stats().ReplyMismatches != 0 {
		t.Fatalf("verification not off: %v", h.events)
	}
}

func TestCauseReplyMismatchString(t *testing.T) {
	if s := CauseReplyMismatch.String(); s != "reply-mismatch" {
		t.Fatal(s)
	}
}

// --- property harness ------------------------------------------------------

// vprop feeds n branches' reply streams to a flow in random segments:
// each branch cuts its stream its own way, loses segments (some never
// come again: the client got the bytes elsewhere), duplicates and
// retransmits resegmented, and the branches interleave at random within
// a bounded lead. perfect[k] makes branch k's delivery contiguous.
type vprop struct {
	h       *harness
	r       *rand.Rand
	streams [][]byte
	perfect []bool
	loss    float64
	maxSeg  int
	lead    int
}

type vseg struct{ from, to int }

func (p *vprop) run() {
	n := len(p.streams)
	queues := make([][]vseg, n)
	for k := range queues {
		l := len(p.streams[k])
		for off := 0; off < l; {
			end := min(l, off+1+p.r.Intn(p.maxSeg))
			queues[k] = append(queues[k], vseg{off, end})
			off = end
		}
	}
	sent := make([]int, n) // highest end sent
	for {
		lo := -1
		for k := range queues {
			if len(queues[k]) > 0 && (lo < 0 || sent[k] < lo) {
				lo = sent[k]
			}
		}
		if lo < 0 {
			return
		}
		var ready []int
		for k := range queues {
			if len(queues[k]) > 0 && sent[k] <= lo+p.lead {
				ready = append(ready, k)
			}
		}
		k := ready[p.r.Intn(len(ready))]
		q := queues[k]
		i := 0
		if !p.perfect[k] && len(q) > 1 && p.r.Float64() < p.loss {
			i = 1 // reordered: the next one overtakes
		}
		s := q[i]
		queues[k] = append(q[:i:i], q[i+1:]...)
		if !p.perfect[k] {
			switch x := p.r.Float64(); {
			case x < p.loss && s.to < len(p.streams[k]):
				continue // lost for good (a later segment covers it; a lost tail is always retransmitted)
			case x < 2*p.loss:
				// Lost, retransmitted later, cut differently.
				mid := s.from + p.r.Intn(s.to-s.from)
				if mid > s.from {
					queues[k] = append(queues[k], vseg{s.from, mid})
				}
				queues[k] = append(queues[k], vseg{mid, s.to})
				continue
			case x < 3*p.loss:
				queues[k] = append(queues[k], s) // duplicated
			}
		}
		var fl uint8
		if p.r.Intn(3) == 0 {
			fl = packet.FlagPSH
		}
		if s.to == len(p.streams[k]) {
			fl = packet.FlagFIN
		}
		p.h.replyFl(k, uint32(s.from), p.streams[k][s.from:s.to], 0, 500, fl)
		sent[k] = max(sent[k], s.to)
	}
}

func newVprop(t testing.TB, seed int64, n int, length int, loss float64, maxSeg int) *vprop {
	r := rand.New(rand.NewSource(seed))
	h := newHarness(t, n, Config{})
	h.open()
	base := make([]byte, length)
	r.Read(base)
	p := &vprop{h: h, r: r, perfect: make([]bool, n), loss: loss, maxSeg: maxSeg, lead: 8 * verifyChunk}
	for range n {
		p.streams = append(p.streams, base)
	}
	return p
}

// Identical replies under loss, duplication, reordering and different
// segmentation never mismatch.
func TestVerifyIdenticalStreamsNeverMismatch(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 20
	}
	var verified, unverified uint64
	for seed := int64(1); seed <= int64(seeds); seed++ {
		r := rand.New(rand.NewSource(seed))
		n := 2 + r.Intn(4)
		loss := []float64{0, 0.01, 0.05, 0.2}[r.Intn(4)]
		length, maxSeg := 1+r.Intn(20*verifyChunk), 100+r.Intn(3000)
		if seed%10 == 0 {
			length, maxSeg = 1+r.Intn(3*verifyChunk), 1+r.Intn(20) // tiny segments
		}
		p := newVprop(t, seed, n, length, loss, maxSeg)
		p.run()
		st := p.h.f.Stats()
		if st.ReplyMismatches != 0 || p.h.f.Live() != n {
			t.Fatalf("seed %d n=%d loss=%v: identical streams mismatched: %+v %v", seed, n, loss, st, p.h.events)
		}
		verified += st.RepliesVerified
		unverified += st.RepliesUnverified
	}
	if verified == 0 {
		t.Fatal("nothing was verified")
	}
	t.Logf("points verified %d, chunks unverified %d", verified, unverified)
}

// A planted one-byte difference in one branch is found when that branch
// and enough others hash its chunk contiguously: all of them, or two
// healthy ones (a strict majority of the reports). The odd branch alone
// is removed, at an offset at or before the difference, in the
// difference's chunk. Other branches lose, duplicate and reorder segments
// meanwhile. With three branches and a hole in one healthy copy the vote
// is an even split: nobody is removed.
func TestVerifyPlantedDifferenceFound(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 20
	}
	for seed := int64(1); seed <= int64(seeds); seed++ {
		r := rand.New(rand.NewSource(seed))
		n := 2 + r.Intn(4)
		length := 1 + r.Intn(10*verifyChunk)
		p := newVprop(t, seed, n, length, []float64{0, 0.05, 0.2}[r.Intn(3)], 50+r.Intn(3000))
		// Odd: the last branch (so a tie resolves against it); branches
		// 0, 1 and the odd one deliver contiguously, the others do not.
		odd := n - 1
		split := n == 3 && seed%2 == 0 && p.loss > 0
		p.perfect[0], p.perfect[1], p.perfect[odd] = true, !split, true
		x := r.Intn(length)
		p.streams[odd] = bytes.Clone(p.streams[odd])
		p.streams[odd][x] ^= byte(1 + r.Intn(255))
		p.run()
		for k := 0; k < odd; k++ {
			if _, ok := p.h.removed(k); ok {
				t.Fatalf("seed %d n=%d: healthy branch %d removed: %v", seed, n, k, p.h.events)
			}
		}
		if split {
			continue
		}
		// Every stream ends with a FIN: a quiescent point settles the
		// partial last chunk.
		ev, ok := p.h.removed(odd)
		if !ok || ev.Cause != CauseReplyMismatch {
			t.Fatalf("seed %d n=%d: planted difference at %d of %d not found: %v %+v", seed, n, x, length, p.h.events, p.h.f.Stats())
		}
		if ev.Offset > uint64(x) || ev.Offset < chunkStart(uint64(x)) {
			t.Fatalf("seed %d: offset %d, difference at %d", seed, ev.Offset, x)
		}
	}
}

// FuzzVerify: identical streams never mismatch, whatever the schedule.
func FuzzVerify(f *testing.F) {
	f.Add(int64(1), uint8(2), uint8(0), uint16(1460), uint32(10000))
	f.Add(int64(2), uint8(3), uint8(20), uint16(1), uint32(5000))
	f.Add(int64(3), uint8(5), uint8(50), uint16(9000), uint32(100000))
	f.Fuzz(func(t *testing.T, seed int64, n, loss uint8, maxSeg uint16, length uint32) {
		nb := 2 + int(n%5)
		p := newVprop(t, seed, nb, 1+int(length%(64*verifyChunk)), float64(loss%30)/100, 1+int(maxSeg%16000))
		p.lead = 1 + int(length%(40*verifyChunk))
		p.run()
		if st := p.h.f.Stats(); st.ReplyMismatches != 0 || p.h.f.Live() != nb {
			t.Fatalf("identical streams mismatched: %+v %v", st, p.h.events)
		}
	})
}

// Three branches, the odd one answering a reply of another length (a
// stale record): in every arrival order the client gets only the
// majority's bytes (a point opens where the first branch stops, and a
// branch passing it reports there, so an odd branch arriving last is
// removed before its segment is forwarded), and the odd branch is removed
// once the others' replies pass the point where it stopped.
func TestVerifyDifferentLengthNeverForwardedWithThree(t *testing.T) {
	orders := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	for _, order := range orders {
		h := newHarness(t, 3, Config{})
		h.open()
		good := []byte("$4\r\ngood\r\n")
		check := func(segs []seg) {
			t.Helper()
			for _, s := range segs {
				if s.To != ToClient || len(s.Data) == 0 {
					continue
				}
				rel := int(h.relSeq(s))
				if rel+len(s.Data) > len(good) || !bytes.Equal(s.Data, good[rel:rel+len(s.Data)]) {
					t.Fatalf("order %v: client got %q at %d, not the majority's bytes", order, s.Data, rel)
				}
			}
		}
		pos := []uint32{0, 0, 0}
		for round := 0; round < 4 && h.f.Live() == 3; round++ {
			for _, k := range order {
				r := "+OK\r\n"
				switch {
				case round == 0 && k == 1:
					r = "$11\r\nstale-value\r\n"
				case round == 0:
					r = "$4\r\ngood\r\n"
				}
				if k == 0 && round > 0 {
					good = append(good, r...)
				}
				if _, gone := h.removed(k); !gone {
					check(h.push(k, pos[k], r))
				}
				pos[k] += uint32(len(r))
			}
		}
		if ev, ok := h.removed(1); !ok || ev.Cause != CauseReplyMismatch || ev.Offset != 0 {
			t.Fatalf("order %v: odd branch not removed: %v", order, h.events)
		}
		if h.f.Live() != 2 {
			t.Fatalf("order %v: healthy branch removed: %v", order, h.events)
		}
	}
}

// A mismatch names a winning branch (Peer), and both sides' last reply
// bytes can be shown: at most ReplyTail of them, ending at the branch's
// position, whatever the segmentation.
func TestVerifyMismatchShowsBothReplies(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	long := string(bytes.Repeat([]byte("a"), 100)) // pushes older bytes out of the tail
	h.push(0, 0, long)
	h.push(1, 0, long)
	h.push(0, 100, "+OK\r\n")
	h.push(1, 100, "-ERR quorum timeout\r\n")
	ev, ok := h.removed(1)
	if !ok || ev.Cause != CauseReplyMismatch || ev.Peer != 0 || ev.Offset != 100 {
		t.Fatalf("removal %+v %v; events %v", ev, ok, h.events)
	}
	end, b := h.f.ReplyTail(1)
	want := long[100-(ReplyTail-len("-ERR quorum timeout\r\n")):] + "-ERR quorum timeout\r\n"
	if end != 121 || string(b) != want {
		t.Fatalf("removed branch's tail [%d) %q, want [121) %q", end, b, want)
	}
	end, b = h.f.ReplyTail(0)
	if want := long[100-(ReplyTail-5):] + "+OK\r\n"; end != 105 || string(b) != want {
		t.Fatalf("winner's tail [%d) %q, want [105) %q", end, b, want)
	}
	if _, b := h.f.ReplyTail(7); b != nil {
		t.Fatalf("tail of no branch: %q", b)
	}
}

// The tail keeps the last ReplyTail bytes across small and large writes.
func TestKeepTail(t *testing.T) {
	var vb vbranch
	var all []byte
	for i, n := range []int{1, 3, 47, 2, 100, 5, 0, 48, 49, 1} {
		d := bytes.Repeat([]byte{byte('a' + i)}, n)
		vb.keepTail(d)
		all = append(all, d...)
		want := all[max(0, len(all)-ReplyTail):]
		if got := vb.tail[ReplyTail-vb.tailN:]; !bytes.Equal(got, want) {
			t.Fatalf("after write %d: %q, want %q", i, got, want)
		}
	}
}

// Three branches, the odd one (a longer, stale reply) first: the first
// bytes the client gets at every offset are the majority's, also after the
// odd branch retransmits (a first held-copy check held the others' bytes
// back while their coverage counted, and the odd branch's retransmission
// then delivered its bytes first: TestForkNSReplyMismatchDropsDC). A
// retransmission of bytes already delivered may carry another branch's
// copy; the client's TCP drops it as a duplicate.
func TestVerifyOddFirstNeverDeliveredWithThree(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	good := "$4\r\ngood\r\n"
	first := map[int]byte{} // first byte the client got at each offset
	deliver := func(segs []seg) {
		for _, sg := range segs {
			if sg.To != ToClient {
				continue
			}
			rel := int(h.relSeq(sg))
			for i, c := range sg.Data {
				if _, ok := first[rel+i]; !ok {
					first[rel+i] = c
				}
			}
		}
	}
	deliver(h.push(1, 0, "$11\r\nstale-value\r\n"))
	deliver(h.push(0, 0, good))
	deliver(h.push(2, 0, good))
	deliver(h.push(1, 0, "$11\r\nstale-value\r\n")) // retransmitted
	for off, c := range first {
		if off >= len(good) || c != good[off] {
			t.Fatalf("client first got %q at %d, want the majority's reply %q", c, off, good)
		}
	}
	if len(first) != len(good) {
		t.Fatalf("client got %d bytes of the reply, want %d", len(first), len(good))
	}
}
