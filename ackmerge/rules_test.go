package ackmerge

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/netstackio/packet"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

// One test per rule of docs/design.md section 4 and per claim of the paper.

// Handshake: the client SYN is copied to every live DC, dst rewritten,
// SACK-permitted and timestamps NOP-ed out, MSS and window scale kept.
func TestSYNCopiedToEveryBranchWithoutSACKAndTimestamps(t *testing.T) {
	h := newHarness(t, 3, Config{})
	out := h.clientSYN()
	if len(out) != 3 {
		t.Fatalf("want 3 SYN copies, got %d", len(out))
	}
	inPlace := 0
	seen := map[int]bool{}
	for _, s := range out {
		seen[s.To] = true
		if s.InPlace {
			inPlace++
		}
		if s.Flags != packet.FlagSYN || s.Seq != h.cliISS {
			t.Errorf("copy %v: want SYN seq %d", s, h.cliISS)
		}
		if hasOpt(s.Opts, packet.OptSACKPermitted) || hasOpt(s.Opts, packet.OptTimestamps) {
			t.Errorf("copy to %d still offers SACK or timestamps: %x", s.To, s.Opts)
		}
		if !hasOpt(s.Opts, packet.OptMSS) || !hasOpt(s.Opts, packet.OptWindowScale) {
			t.Errorf("copy to %d lost MSS or window scale: %x", s.To, s.Opts)
		}
		if len(s.Opts) != len(synOpts) {
			t.Errorf("options resized: %d", len(s.Opts))
		}
	}
	if len(seen) != 3 || inPlace != 1 {
		t.Fatalf("want one copy per branch, one in place; got %v, in place %d", seen, inPlace)
	}
	if h.f.State() != StateSynSent {
		t.Fatalf("state %v", h.f.State())
	}
}

// Handshake: one SYN-ACK to the client once every branch answered, seq =
// the reference (first answering) branch's ISS, MSS = min, window scale
// expressing every branch's window.
func TestOneSYNACKAfterEveryBranchAnswered(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.clientSYN()
	none(t, h.branchSynAck(1, 1400, 2, 29200))
	none(t, h.branchSynAck(0, 1380, 9, 65535))
	sa := only(t, h.branchSynAck(2, 1460, -1, 5000), ToClient)
	if sa.Flags != packet.FlagSYN|packet.FlagACK {
		t.Fatalf("flags %#x", sa.Flags)
	}
	if sa.Seq != h.iss[1] || sa.Ack != h.cliISS+1 {
		t.Fatalf("SYN-ACK seq %d ack %d; want reference ISS %d (branch 1 answered first), ack %d", sa.Seq, sa.Ack, h.iss[1], h.cliISS+1)
	}
	if sa.Wnd != 5000 {
		t.Fatalf("SYN-ACK window %d, want the smallest (5000)", sa.Wnd)
	}
	if !bytes.Contains(sa.Opts, []byte{packet.OptMSS, 4, 1380 >> 8, 1380 & 0xff}) {
		t.Fatalf("MSS not the minimum 1380: %x", sa.Opts)
	}
	if !bytes.Contains(sa.Opts, []byte{packet.OptWindowScale, 3, 9}) {
		t.Fatalf("window scale must be the largest branch scale (9): %x", sa.Opts)
	}
	if hasOpt(sa.Opts, packet.OptSACKPermitted) || hasOpt(sa.Opts, packet.OptTimestamps) {
		t.Fatalf("SYN-ACK offers SACK/timestamps")
	}
	if !h.hasEvent(EvEstablished, -1, CauseNone) {
		t.Fatal("no EvEstablished")
	}
	// Per-branch offsets are iss_k - iss_ref.
	for k := 0; k < 3; k++ {
		if got, want := h.f.Branch(k).Offset, h.iss[k]-h.iss[1]; got != want {
			t.Errorf("branch %d offset %d want %d", k, got, want)
		}
	}
}

// Handshake timeout: silent branches are dropped if at least MinReplicas
// answered.
func TestHandshakeTimeoutDropsSilentBranch(t *testing.T) {
	h := newHarness(t, 3, Config{MinReplicas: 2, HandshakeTimeout: time.Second})
	h.clientSYN()
	h.branchSynAck(0, 1460, 7, 65535)
	h.branchSynAck(2, 1460, 7, 65535)
	none(t, h.tick(999*time.Millisecond))
	out := h.tick(time.Millisecond)
	sa := only(t, out, ToClient)
	if sa.Flags != packet.FlagSYN|packet.FlagACK || sa.Seq != h.iss[0] {
		t.Fatalf("want SYN-ACK from reference, got %v", sa)
	}
	if !h.hasEvent(EvBranchRemoved, 1, CauseHandshakeTimeout) || h.f.Live() != 2 {
		t.Fatalf("branch 1 not removed for handshake timeout: %v", h.events)
	}
	// Client data now goes to the two survivors only.
	out = h.send(0, []byte("x"), 0, 502)
	if len(out) != 2 || out[0].To == 1 || out[1].To == 1 {
		t.Fatalf("data went to %v", out)
	}
}

// Handshake timeout below MinReplicas: the client gets a RST it accepts in
// SYN-SENT (ACK of its SYN), answered branches get a RST too.
func TestHandshakeTimeoutResetsClientBelowMinReplicas(t *testing.T) {
	h := newHarness(t, 3, Config{MinReplicas: 2, HandshakeTimeout: time.Second})
	h.clientSYN()
	h.branchSynAck(0, 1460, 7, 65535)
	out := h.tick(time.Second)
	var cli, br []seg
	for _, s := range out {
		if s.To == ToClient {
			cli = append(cli, s)
		} else {
			br = append(br, s)
		}
	}
	c := only(t, cli, ToClient)
	if c.Flags != packet.FlagRST|packet.FlagACK || c.Ack != h.cliISS+1 {
		t.Fatalf("client RST %v: must be RST|ACK acking the SYN", c)
	}
	b := only(t, br, 0)
	if b.Flags&packet.FlagRST == 0 || b.Seq != h.cliISS+1 {
		t.Fatalf("branch 0 RST %v must have seq = its rcv.nxt %d", b, h.cliISS+1)
	}
	if h.f.State() != StateReset || !h.hasEvent(EvClientReset, -1, CauseMinReplicas) {
		t.Fatalf("state %v events %v", h.f.State(), h.events)
	}
	h.tick(3 * time.Second)
	if h.f.State() != StateDone || !h.hasEvent(EvDone, -1, CauseNone) {
		t.Fatalf("flow not done after linger: %v", h.f.State())
	}
}

// Client -> branches: every segment is copied to every live branch with
// its ack translated by off_k; the payload is not touched nor buffered.
func TestClientSegmentCopiedWithAckTranslated(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	data := []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
	out := h.send(0, data, 0, 502)
	if len(out) != 3 {
		t.Fatalf("want 3 copies, got %d", len(out))
	}
	for _, s := range out {
		if s.Seq != h.cliISS+1 {
			t.Errorf("copy %d: seq %d changed", s.To, s.Seq)
		}
		if want := h.iss[s.To] + 1; s.Ack != want {
			t.Errorf("copy %d: ack %d want %d (translated into the branch's space)", s.To, s.Ack, want)
		}
		if !bytes.Equal(s.Data, data) || s.Wnd != 502 {
			t.Errorf("copy %d: payload or window changed", s.To)
		}
	}
	if st := h.f.Stats(); st.ToBranches < 3 {
		t.Fatalf("stats %+v", st)
	}
}

// SACK blocks on client ACKs never reach branches (they would be in the
// wrong sequence space).
func TestClientSACKBlocksNOPedOut(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	sack := []byte{packet.OptNOP, packet.OptNOP, packet.OptSACK, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	out := h.step(ToClient, seg{Src: cliAddr, Dst: vipAddr, Seq: h.cliISS + 1, Ack: h.ref() + 1, Flags: packet.FlagACK, Wnd: 502, Opts: sack})
	for _, s := range out {
		if hasOpt(s.Opts, packet.OptSACK) {
			t.Fatalf("SACK reached branch %d: %x", s.To, s.Opts)
		}
	}
}

// Paper, section 3.2: "data is acknowledged only when all live servers have
// acknowledged it" (RPO = 0 for acknowledged writes).
func TestClientAckedOnlyWhatEveryLiveBranchAcked(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	h.send(0, make([]byte, 1000), 0, 502)
	none(t, h.ack(0, 1000, 500))
	none(t, h.ack(2, 600, 500))
	s := only(t, h.ack(1, 1000, 500), ToClient)
	if h.relAck(s) != 600 {
		t.Fatalf("client acked %d, want the minimum 600", h.relAck(s))
	}
	s = only(t, h.ack(2, 1000, 500), ToClient)
	if h.relAck(s) != 1000 {
		t.Fatalf("client acked %d, want 1000", h.relAck(s))
	}
	if a, _ := h.f.Acked(); a != 1000 {
		t.Fatalf("Acked() = %d", a)
	}
}

// Window: the client is offered min edge - min ack, in the client-visible
// scale, exactly (rounded down).
func TestWindowIsMinimumRightEdge(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.clientSYN()
	h.branchSynAck(0, 1460, 2, 65535)
	h.branchSynAck(1, 1460, 7, 65535) // facing scale = 7
	h.send(0, nil, 0, 502)
	h.send(0, make([]byte, 1000), 0, 502)
	// branch 0: ack 1000, window 40000<<2 -> edge 161000
	// branch 1: ack 500, window 2000<<7 -> edge 256500
	h.ack(0, 1000, 40000)
	s := only(t, h.ack(1, 500, 2000), ToClient)
	if h.relAck(s) != 500 {
		t.Fatalf("ack %d", h.relAck(s))
	}
	if want := uint16((161000 - 500) >> 7); s.Wnd != want {
		t.Fatalf("window %d, want (min edge - min ack)>>7 = %d", s.Wnd, want)
	}
}

// An ACK that raises neither the merged ack nor the window is dropped,
// except a duplicate ACK of the branch holding the minimum (fast
// retransmit must keep working).
func TestDuplicateAckOfSlowestBranchPassedOn(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	h.send(0, make([]byte, 3000), 0, 502)
	h.ack(0, 3000, 500)
	only(t, h.ack(1, 1000, 500), ToClient) // raises min to 1000
	none(t, h.ack(0, 3000, 500))           // fast branch's dup: nothing new
	for i := 0; i < 3; i++ {
		s := only(t, h.ack(1, 1000, 500), ToClient)
		if h.relAck(s) != 1000 || len(s.Data) != 0 {
			t.Fatalf("dup ack %v", s)
		}
	}
	if h.f.Stats().DupAcks != 3 {
		t.Fatalf("DupAcks = %d", h.f.Stats().DupAcks)
	}
}

// Reply bytes reach the client only once every branch sent them; seq is
// translated into the reference space; nothing is buffered.
func TestReplyForwardedOnlyWhenEveryBranchSentIt(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	h.send(0, []byte("SET"), 0, 502)
	ok := []byte("+OK\r\n")
	none(t, h.reply(0, 0, ok, 3, 500)) // branch 0's ack of 3 is held too
	none(t, h.reply(2, 0, ok, 3, 500))
	s := only(t, h.reply(1, 0, ok, 3, 500), ToClient)
	if !bytes.Equal(s.Data, ok) || h.relSeq(s) != 0 || h.relAck(s) != 3 {
		t.Fatalf("reply %v data %q", s, s.Data)
	}
	if !s.InPlace {
		t.Fatal("reply should be forwarded in place")
	}
}

// Different segmentation: each branch's segment is trimmed to the part
// every branch has sent.
func TestReplyTrimmedAcrossDifferentSegmentation(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	body := []byte("0123456789abcdefghij")
	none(t, h.reply(0, 0, body[:12], 0, 500))
	s := only(t, h.reply(1, 0, body[:5], 0, 500), ToClient)
	if string(s.Data) != "01234" || h.relSeq(s) != 0 {
		t.Fatalf("got %q at %d", s.Data, h.relSeq(s))
	}
	s = only(t, h.reply(1, 5, body[5:20], 0, 500), ToClient) // covers to 12
	if string(s.Data) != "56789ab" || h.relSeq(s) != 5 {
		t.Fatalf("got %q at %d", s.Data, h.relSeq(s))
	}
	s = only(t, h.reply(0, 12, body[12:20], 0, 500), ToClient)
	if string(s.Data) != "cdefghij" || h.relSeq(s) != 12 {
		t.Fatalf("got %q at %d", s.Data, h.relSeq(s))
	}
	if h.f.Stats().Trimmed == 0 {
		t.Fatal("no trim counted")
	}
}

// Retransmitted reply bytes are re-forwarded while the client has not
// acknowledged them, and no longer once it has.
func TestRetransmittedReplyReforwardedUntilClientAcks(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	ok := []byte("+OK\r\n")
	h.reply(0, 0, ok, 0, 500)
	only(t, h.reply(1, 0, ok, 0, 500), ToClient)
	s := only(t, h.reply(0, 0, ok, 0, 500), ToClient) // retransmission
	if !bytes.Equal(s.Data, ok) {
		t.Fatalf("retransmission not re-forwarded: %v", s)
	}
	h.send(0, nil, 5, 502) // client acks the reply
	// A branch that still retransmits missed that ACK: the flow repeats
	// the client's ACK to it, translated into its space.
	s = only(t, h.reply(1, 0, ok, 0, 500), 1)
	if s.Flags != packet.FlagACK || s.Ack != h.iss[1]+1+5 || s.Seq != h.cliISS+1 || len(s.Data) != 0 || s.Wnd != 502 {
		t.Fatalf("repeated ACK to branch 1: %v", s)
	}
}

// The client retransmitting bytes we already acknowledged lost our ACK:
// the flow repeats it at once.
func TestClientRetransmissionOfAckedBytesGetsACK(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	h.send(0, []byte("SET"), 0, 502)
	h.ack(0, 3, 500)
	only(t, h.ack(1, 3, 500), ToClient) // lost on its way
	out := h.send(0, []byte("SET"), 0, 502)
	var acks, copies int
	for _, s := range out {
		if s.To == ToClient && h.relAck(s) == 3 {
			acks++
		} else if s.To >= 0 {
			copies++
		}
	}
	if acks != 1 || copies != 2 {
		t.Fatalf("want one repeated ACK and two copies: %v", out)
	}
}

// A segment past a hole proves its branch sent everything before it (TCP
// sends in order; the hole was lost on the way). Bytes every branch has
// sent are forwarded even out of order: the client reassembles, and its
// duplicate ACKs make the branches retransmit the hole. Nothing is
// buffered.
func TestReplyPastAHoleForwardedOnceEveryBranchSentIt(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	none(t, h.reply(0, 5, []byte("later"), 0, 500))
	s := only(t, h.reply(1, 5, []byte("later"), 0, 500), ToClient)
	if string(s.Data) != "later" || h.relSeq(s) != 5 {
		t.Fatalf("got %q at %d", s.Data, h.relSeq(s))
	}
	if h.f.Stats().OutOfOrder != 2 {
		t.Fatalf("OutOfOrder = %d", h.f.Stats().OutOfOrder)
	}
	// The client's duplicate ACK reaches every branch; a retransmission
	// fills the hole.
	if out := h.send(0, nil, 0, 502); len(out) != 2 {
		t.Fatalf("dup ACK copies %v", out)
	}
	s = only(t, h.reply(0, 0, []byte("first"), 0, 500), ToClient)
	if string(s.Data) != "first" || h.relSeq(s) != 0 {
		t.Fatalf("%q", s.Data)
	}
}

// FIN reaches the client only when every branch closed at the same offset.
func TestFINOnlyWhenEveryBranchClosedAtSameOffset(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	ok := []byte("+OK\r\n")
	h.replyFl(0, 0, ok, 0, 500, packet.FlagFIN)
	h.replyFl(1, 0, ok, 0, 500, packet.FlagFIN)
	s := only(t, h.reply(2, 0, ok, 0, 500), ToClient) // data, no FIN yet
	if s.Flags&packet.FlagFIN != 0 || string(s.Data) != "+OK\r\n" {
		t.Fatalf("premature FIN or bad data: %v", s)
	}
	s = only(t, h.replyFl(2, 5, nil, 0, 500, packet.FlagFIN), ToClient)
	if s.Flags&packet.FlagFIN == 0 || h.relSeq(s) != 5 {
		t.Fatalf("want FIN at 5: %v", s)
	}
}

// Teardown: after both FINs are acknowledged the flow lingers, then ends.
func TestTeardownAfterBothFINsAcknowledged(t *testing.T) {
	h := newHarness(t, 2, Config{Linger: time.Second})
	h.open()
	h.sendFl(0, nil, 0, 502, packet.FlagFIN)
	h.replyFl(0, 0, nil, 1, 500, packet.FlagFIN)
	s := only(t, h.replyFl(1, 0, nil, 1, 500, packet.FlagFIN), ToClient)
	if s.Flags&packet.FlagFIN == 0 || h.relAck(s) != 1 {
		t.Fatalf("want FIN acking the client's FIN: %v", s)
	}
	h.send(1, nil, 1, 502) // client acks our FIN
	if h.f.State() != StateLinger {
		t.Fatalf("state %v, want linger", h.f.State())
	}
	h.tick(time.Second)
	if h.f.State() != StateDone || !h.hasEvent(EvDone, -1, CauseClosed) {
		t.Fatalf("state %v events %v", h.f.State(), h.events)
	}
}

// Divergence: a branch that closes at a different offset than the
// majority is dropped and counted; the connection goes on.
func TestFINAtDifferentOffsetIsDivergence(t *testing.T) {
	h := newHarness(t, 3, Config{NoVerify: true}) // else reply verification finds it first (verify_test.go)
	h.open()
	h.replyFl(0, 0, []byte("+OK\r\n"), 0, 500, packet.FlagFIN)
	h.replyFl(1, 0, []byte("-ERR\r\nxx"), 0, 500, packet.FlagFIN) // differs
	out := h.replyFl(2, 0, []byte("+OK\r\n"), 0, 500, packet.FlagFIN)
	if !h.hasEvent(EvBranchRemoved, 1, CauseDivergence) {
		t.Fatalf("branch 1 not dropped for divergence: %v", h.events)
	}
	if h.f.Stats().Divergences != 1 || h.f.Live() != 2 {
		t.Fatalf("stats %+v live %d", h.f.Stats(), h.f.Live())
	}
	var cli []seg
	for _, s := range out {
		if s.To == ToClient {
			cli = append(cli, s)
		}
	}
	if len(cli) != 1 || string(cli[0].Data) != "+OK\r\n" || cli[0].Flags&packet.FlagFIN == 0 {
		t.Fatalf("client got %v", cli)
	}
}

// Divergence: a branch sending bytes past the others' agreed FIN.
func TestBytesPastAgreedFINAreDivergence(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	h.replyFl(0, 0, []byte("+OK\r\n"), 0, 500, packet.FlagFIN)
	h.replyFl(1, 0, []byte("+OK\r\n"), 0, 500, packet.FlagFIN)
	h.reply(2, 0, []byte("+OK\r\n+OK\r\n"), 0, 500)
	if !h.hasEvent(EvBranchRemoved, 2, CauseDivergence) {
		t.Fatalf("branch 2 not dropped: %v", h.events)
	}
}

// Branch loss without reset: a branch RST removes it, merged values are
// recomputed at once (the client sees the survivors' ack immediately) and
// the connection continues.
func TestBranchRSTShrinksFlowWithoutReset(t *testing.T) {
	h := newHarness(t, 3, Config{MinReplicas: 2})
	h.open()
	h.send(0, make([]byte, 100), 0, 502)
	h.ack(0, 100, 500)
	h.ack(1, 100, 500)
	out := h.step(2, seg{Src: nodeAddr(2), Dst: cliAddr, Seq: h.iss[2] + 1, Flags: packet.FlagRST})
	s := only(t, out, ToClient)
	if s.Flags != packet.FlagACK || h.relAck(s) != 100 {
		t.Fatalf("want immediate ACK of 100 after shrink, got %v", s)
	}
	if !h.hasEvent(EvBranchRemoved, 2, CauseRST) || h.f.State() != StateEstablished {
		t.Fatalf("events %v state %v", h.events, h.f.State())
	}
	out = h.send(100, []byte("more"), 0, 502)
	if len(out) != 2 {
		t.Fatalf("continues on 2 branches, got %v", out)
	}
	// A removed branch's later packets get a RST at its rcv.nxt.
	r := only(t, h.ack(2, 100, 500), 2)
	if r.Flags&packet.FlagRST == 0 || r.Seq != h.cliISS+1+100 {
		t.Fatalf("removed branch got %v", r)
	}
}

// Branch loss: a branch lagging the others past the branch timeout while
// data is outstanding is removed.
func TestLaggingBranchRemovedAfterBranchTimeout(t *testing.T) {
	h := newHarness(t, 3, Config{BranchTimeout: 5 * time.Second})
	h.open()
	h.send(0, make([]byte, 100), 0, 502)
	h.ack(0, 100, 500)
	h.ack(1, 100, 500)
	none(t, h.tick(4*time.Second))
	h.ack(2, 50, 500) // progress resets its clock
	none(t, h.tick(4*time.Second))
	out := h.tick(time.Second)
	if !h.hasEvent(EvBranchRemoved, 2, CauseLagged) {
		t.Fatalf("not removed: %v", h.events)
	}
	var gotAck, gotRST bool
	for _, s := range out {
		if s.To == ToClient && h.relAck(s) == 100 {
			gotAck = true
		}
		if s.To == 2 && s.Flags&packet.FlagRST != 0 && s.Seq == h.cliISS+1+50 {
			gotRST = true
		}
	}
	if !gotAck || !gotRST {
		t.Fatalf("want ACK 100 to client and RST to branch 2: %v", out)
	}
}

// Idle branches that are level with the others are never "lagging".
func TestEqualBranchesNeverLag(t *testing.T) {
	h := newHarness(t, 2, Config{BranchTimeout: time.Second})
	h.open()
	h.send(0, make([]byte, 100), 0, 502)
	h.ack(0, 100, 0) // zero window: receiver stopped reading
	h.ack(1, 100, 0)
	h.tick(time.Hour)
	if h.f.Live() != 2 {
		t.Fatalf("a level branch was removed: %v", h.events)
	}
}

// Below MinReplicas the client gets a RST with a sequence number it accepts
// (its rcv.nxt: what it acknowledged).
func TestBelowMinReplicasClientGetsRSTAtRcvNxt(t *testing.T) {
	h := newHarness(t, 2, Config{MinReplicas: 2})
	h.open()
	h.reply(0, 0, []byte("hello"), 0, 500)
	h.reply(1, 0, []byte("hello"), 0, 500)
	h.send(0, nil, 5, 502)
	out := h.step(1, seg{Src: nodeAddr(1), Dst: cliAddr, Seq: h.iss[1] + 6, Flags: packet.FlagRST})
	var rst []seg
	for _, s := range out {
		if s.To == ToClient {
			rst = append(rst, s)
		}
	}
	r := only(t, rst, ToClient)
	if r.Flags&packet.FlagRST == 0 || h.relSeq(r) != 5 {
		t.Fatalf("client RST %v: want seq = rcv.nxt (rel 5)", r)
	}
	if !h.hasEvent(EvClientReset, -1, CauseMinReplicas) {
		t.Fatalf("events %v", h.events)
	}
	// A challenge ACK from the client gets a RST at its ack.
	r = only(t, h.send(0, nil, 5, 502), ToClient)
	if r.Flags&packet.FlagRST == 0 || h.relSeq(r) != 5 {
		t.Fatalf("answer to challenge ACK: %v", r)
	}
}

// Failover removes a branch through RemoveBranch; the flow continues.
func TestRemoveBranchByFailover(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	h.send(0, make([]byte, 10), 0, 502)
	h.ack(0, 10, 500)
	out := h.remove(1)
	var ack, rst bool
	for _, s := range out {
		ack = ack || s.To == ToClient && h.relAck(s) == 10
		rst = rst || s.To == 1 && s.Flags&packet.FlagRST != 0
	}
	if !ack || !rst || !h.hasEvent(EvBranchRemoved, 1, CauseFailover) {
		t.Fatalf("out %v events %v", out, h.events)
	}
	if h.f.Branch(1).Live || h.f.Branch(1).Cause != CauseFailover {
		t.Fatalf("branch info %+v", h.f.Branch(1))
	}
}

// Sequence numbers wrap: the harness ISSs sit next to 2^32 already; this
// pushes a transfer across the wrap in both directions.
func TestSequenceWraparound(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.cliISS = 0xffffffff - 100
	h.iss[0], h.iss[1] = 0xffffffff-50, 7
	h.open()
	data := make([]byte, 400)
	h.send(0, data, 0, 502)
	h.ack(0, 400, 500)
	s := only(t, h.ack(1, 400, 500), ToClient)
	if h.relAck(s) != 400 {
		t.Fatalf("ack across wrap %d", h.relAck(s))
	}
	h.reply(0, 0, data, 400, 500)
	s = only(t, h.reply(1, 0, data, 400, 500), ToClient)
	if h.relSeq(s) != 0 || len(s.Data) != 400 || s.Seq+400 > s.Seq {
		t.Fatalf("reply across wrap %v", s)
	}
}

// Offload super-packets: a GSO client segment with a partial checksum is
// copied with its virtio-net header; a partial reply is trimmed with the
// length part of the pseudo-header sum adjusted.
func TestOffloadSuperPacketsKeepVnetHeader(t *testing.T) {
	h := newHarness(t, 3, Config{})
	h.open()
	big := bytes.Repeat([]byte("abcdefgh"), 8000) // 64000 bytes
	out := h.step(ToClient, seg{Src: cliAddr, Dst: vipAddr, Seq: h.cliISS + 1, Ack: h.ref() + 1, Flags: packet.FlagACK, Wnd: 502, Data: big, Partial: true, GSO: 1448})
	if len(out) != 3 {
		t.Fatalf("copies %d", len(out))
	}
	for _, s := range out {
		if !s.Partial || s.GSO != 1448 || !bytes.Equal(s.Data, big) {
			t.Fatalf("copy to %d lost offload state: partial=%v gso=%d", s.To, s.Partial, s.GSO)
		}
	}
	h.step(0, seg{Src: nodeAddr(0), Dst: cliAddr, Seq: h.iss[0] + 1, Ack: h.cliISS + 1, Flags: packet.FlagACK, Wnd: 500, Data: big[:3000], Partial: true, GSO: 1448})
	h.step(1, seg{Src: nodeAddr(1), Dst: cliAddr, Seq: h.iss[1] + 1, Ack: h.cliISS + 1, Flags: packet.FlagACK, Wnd: 500, Data: big[:5000], Partial: true, GSO: 1448})
	s := only(t, h.step(2, seg{Src: nodeAddr(2), Dst: cliAddr, Seq: h.iss[2] + 1, Ack: h.cliISS + 1, Flags: packet.FlagACK, Wnd: 500, Data: big[:4000], Partial: true, GSO: 1448}), ToClient)
	if !s.Partial || len(s.Data) != 3000 || !bytes.Equal(s.Data, big[:3000]) {
		t.Fatalf("trimmed reply: partial=%v len=%d", s.Partial, len(s.Data))
	}
	s = only(t, h.step(1, seg{Src: nodeAddr(1), Dst: cliAddr, Seq: h.iss[1] + 1001, Ack: h.cliISS + 1, Flags: packet.FlagACK, Wnd: 500, Data: big[1000:5000], Partial: true, GSO: 1448}), ToClient)
	if !s.Partial || h.relSeq(s) != 1000 || !bytes.Equal(s.Data, big[1000:3000]) {
		t.Fatalf("head-and-tail trimmed retransmission: partial=%v seq=%d len=%d", s.Partial, h.relSeq(s), len(s.Data))
	}
}

// Bad input is dropped and counted, never a crash.
func TestBadInputDroppedAndCounted(t *testing.T) {
	h := newHarness(t, 2, Config{})
	// Data before any SYN.
	none(t, h.send(0, []byte("x"), 0, 502))
	// Packet from an unknown branch index.
	none(t, h.step(7, seg{Src: nodeAddr(0), Dst: cliAddr, Flags: packet.FlagACK}))
	h.open()
	// A branch acknowledging bytes the client never sent.
	none(t, h.ack(0, 5000, 500))
	// A SYN-ACK with the wrong ack.
	none(t, h.step(0, seg{Src: nodeAddr(0), Dst: cliAddr, Seq: 1, Ack: 3, Flags: packet.FlagSYN | packet.FlagACK}))
	if h.f.Stats().Invalid < 4 {
		t.Fatalf("Invalid = %d", h.f.Stats().Invalid)
	}
	if h.f.State() != StateEstablished {
		t.Fatalf("state %v", h.f.State())
	}
}

// A retransmitted branch SYN-ACK once established makes the flow repeat
// its SYN-ACK to the client (the client's ACK or our SYN-ACK was lost).
func TestRetransmittedSynAckRepeated(t *testing.T) {
	h := newHarness(t, 2, Config{})
	sa := h.open()
	s := only(t, h.branchSynAck(0, 1460, 7, 65535), ToClient)
	if s.Seq != sa.Seq || s.Flags != sa.Flags {
		t.Fatalf("repeat %v vs %v", s, sa)
	}
	none(t, h.branchSynAck(1, 1450, 7, 65535)) // once per flow, not per branch
}

// IPv6 works the same way (addresses are rewritten in the pseudo-header
// sum; the flow builds IPv6 SYN-ACKs).
func TestIPv6Flow(t *testing.T) {
	cli := netip.MustParseAddrPort("[fd00::1]:40000")
	vip := netip.MustParseAddrPort("[fd00:200::1]:6379")
	node := []netip.AddrPort{netip.MustParseAddrPort("[fd00:210:1::11]:6379"), netip.MustParseAddrPort("[fd00:210:2::11]:6379")}
	f, err := NewFlow(Config{}, cli, vip, []Target{{Addr: node[0]}, {Addr: node[1], DC: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewFlow(Config{}, cli, vipAddr, []Target{{Addr: node[0]}}); err == nil {
		t.Fatal("mixed families accepted")
	}
	out := Out{Offset: testOff, Alloc: func(n int) []byte { return make([]byte, n) }}
	now := time.Unix(1, 0)
	step := func(from int, s seg) []seg {
		buf := mkPacket(s)
		var p packet.TCP
		if err := p.Parse(buf[testOff:], virtio.Hdr(buf[testOff-virtio.HdrLen:testOff])); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		f.Step(buf, &p, from, now, &out)
		var r []seg
		for _, e := range out.Pkts {
			r = append(r, decode(t, e, testOff))
		}
		return r
	}
	if got := step(ToClient, seg{Src: cli, Dst: vip, Seq: 100, Flags: packet.FlagSYN, Wnd: 1000, Opts: synOpts}); len(got) != 2 || got[0].Dst != node[0] && got[1].Dst != node[0] {
		t.Fatalf("SYN copies %v", got)
	}
	step(0, seg{Src: node[0], Dst: cli, Seq: 5000, Ack: 101, Flags: packet.FlagSYN | packet.FlagACK, Wnd: 9000, Opts: synAckOpts(1440, 7)})
	sa := step(1, seg{Src: node[1], Dst: cli, Seq: 9000, Ack: 101, Flags: packet.FlagSYN | packet.FlagACK, Wnd: 9000, Opts: synAckOpts(1420, 7)})
	if len(sa) != 1 || sa[0].Src != vip || sa[0].Dst != cli || sa[0].Seq != 5000 {
		t.Fatalf("SYN-ACK %v", sa)
	}
	got := step(ToClient, seg{Src: cli, Dst: vip, Seq: 101, Ack: 5001, Flags: packet.FlagACK, Wnd: 100, Data: []byte("hello")})
	for _, s := range got {
		if want := map[netip.AddrPort]uint32{node[0]: 5001, node[1]: 9001}[s.Dst]; s.Ack != want || string(s.Data) != "hello" {
			t.Fatalf("copy %v", s)
		}
	}
	step(0, seg{Src: node[0], Dst: cli, Seq: 5001, Ack: 106, Flags: packet.FlagACK, Wnd: 100, Data: []byte("+OK")})
	r := step(1, seg{Src: node[1], Dst: cli, Seq: 9001, Ack: 106, Flags: packet.FlagACK, Wnd: 100, Data: []byte("+OK")})
	if len(r) != 1 || r[0].Seq != 5001 || r[0].Ack != 106 || string(r[0].Data) != "+OK" || r[0].Src != vip {
		t.Fatalf("reply %v", r)
	}
}

// A known path MTU towards a DC clamps the MSS both ways: in the SYN copy
// to that branch and in the SYN-ACK the client gets.
func TestPathMTUClampsMSS(t *testing.T) {
	f, err := NewFlow(Config{}, cliAddr, vipAddr, []Target{{Addr: nodeAddr(0)}, {Addr: nodeAddr(1), DC: 1, MTU: 1400}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, 2, Config{})
	h.f = f
	for _, s := range h.clientSYN() {
		want := []byte{packet.OptMSS, 4, 1460 >> 8, 1460 & 0xff}
		if s.To == 1 {
			want = []byte{packet.OptMSS, 4, 1360 >> 8, 1360 & 0xff}
		}
		if !bytes.Contains(s.Opts, want) {
			t.Fatalf("SYN to %d: options %x, want MSS %x", s.To, s.Opts, want[2:])
		}
	}
	h.branchSynAck(0, 1460, 7, 65535)
	sa := only(t, h.branchSynAck(1, 1460, 7, 65535), ToClient)
	if !bytes.Contains(sa.Opts, []byte{packet.OptMSS, 4, 1360 >> 8, 1360 & 0xff}) {
		t.Fatalf("SYN-ACK MSS not clamped: %x", sa.Opts)
	}
}

// After both directions closed and were acknowledged, a RST from a server
// that already dropped its socket is teardown noise: no shrink, no reset.
func TestRSTDuringLingerIsNotAFailure(t *testing.T) {
	h := newHarness(t, 2, Config{MinReplicas: 2, Linger: time.Second})
	h.open()
	h.sendFl(0, nil, 0, 502, packet.FlagFIN)
	h.replyFl(0, 0, nil, 1, 500, packet.FlagFIN)
	h.replyFl(1, 0, nil, 1, 500, packet.FlagFIN)
	h.send(1, nil, 1, 502)
	if h.f.State() != StateLinger {
		t.Fatalf("state %v", h.f.State())
	}
	none(t, h.step(0, seg{Src: nodeAddr(0), Dst: cliAddr, Seq: h.iss[0] + 2, Flags: packet.FlagRST}))
	if h.f.State() != StateLinger || len(h.events) != 1 { // EvEstablished only
		t.Fatalf("state %v events %v", h.f.State(), h.events)
	}
	// Later client segments go only to the branch still there.
	if out := h.send(1, nil, 1, 502); len(out) != 1 || out[0].To != 1 {
		t.Fatalf("copies after a linger RST: %v", out)
	}
}

// With Config.SACK, the client is offered SACK when every branch agreed,
// and gets the slowest branch's blocks cut down to what every branch holds.
func TestSACKBlocksAreTheIntersection(t *testing.T) {
	h := newHarness(t, 2, Config{SACK: true})
	out := h.clientSYN()
	for _, s := range out {
		if !hasOpt(s.Opts, packet.OptSACKPermitted) || hasOpt(s.Opts, packet.OptTimestamps) {
			t.Fatalf("SYN copy options %x", s.Opts)
		}
	}
	sackOK := []byte{packet.OptNOP, packet.OptNOP, packet.OptSACKPermitted, 2}
	for k := 0; k < 2; k++ {
		out = h.step(k, seg{Src: nodeAddr(k), Dst: cliAddr, Seq: h.iss[k], Ack: h.cliISS + 1,
			Flags: packet.FlagSYN | packet.FlagACK, Wnd: 65535, Opts: append(synAckOpts(1460, 7), sackOK...)})
	}
	if sa := only(t, out, ToClient); !hasOpt(sa.Opts, packet.OptSACKPermitted) {
		t.Fatalf("SYN-ACK does not offer SACK: %x", sa.Opts)
	}
	h.send(0, nil, 0, 502)
	h.send(0, make([]byte, 500), 0, 502)
	c := h.cliISS + 1
	block := func(bs ...uint32) []byte {
		o := []byte{packet.OptNOP, packet.OptNOP, packet.OptSACK, byte(2 + 4*len(bs))}
		for _, b := range bs {
			o = binary.BigEndian.AppendUint32(o, c+b)
		}
		return o
	}
	// Branch 0 is ahead (acked 100) and holds [200,300) and [400,500).
	h.step(0, seg{Src: nodeAddr(0), Dst: cliAddr, Seq: h.iss[0] + 1, Ack: c + 100, Flags: packet.FlagACK, Wnd: 500, Opts: block(200, 300, 400, 500)})
	// Branch 1 (the slowest, acked 50) holds [150,250) and [350,450).
	s := only(t, h.step(1, seg{Src: nodeAddr(1), Dst: cliAddr, Seq: h.iss[1] + 1, Ack: c + 50, Flags: packet.FlagACK, Wnd: 500, Opts: block(150, 250, 350, 450)}), ToClient)
	if h.relAck(s) != 50 {
		t.Fatalf("ack %d", h.relAck(s))
	}
	// Every branch holds [200,250) and [400,450) (the option is rewritten
	// in place: at most as many blocks as the branch sent).
	want := block(200, 250, 400, 450)[2:]
	if !bytes.Contains(s.Opts, want) {
		t.Fatalf("SACK option %x, want %x", s.Opts, want)
	}
}

// Issue 9 item 8: the near branch (0) is cut; the far branch (1) goes on
// and sends reply bytes past branch 0's last coverage, which are not
// forwarded. When branch 0 is removed, the client gets those bytes at
// once, not after branch 1's retransmission timeout (nothing else would
// make branch 1 send them again: its SACK-less duplicate ACKs do not).
func TestRemovalDeliversHeldReplyBytesAtOnce(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	h.send(0, []byte("SET a\r\n"), 0, 502)
	h.reply(0, 0, []byte("+OK\r\n"), 7, 500)
	only(t, h.reply(1, 0, []byte("+OK\r\n"), 7, 500), ToClient)
	// Cut: branch 0 falls silent. The client sends two more writes;
	// branch 1 acknowledges and answers both.
	h.send(7, []byte("SET b\r\n"), 5, 502)
	h.send(14, []byte("SET c\r\n"), 5, 502)
	none(t, h.reply(1, 5, []byte("+OK\r\n"), 21, 500))
	none(t, h.reply(1, 10, []byte("+OK\r\n"), 21, 500))
	h.tick(500 * time.Millisecond)
	out := h.remove(0)
	var data []byte
	var acked bool
	for _, s := range out {
		if s.To != ToClient {
			continue
		}
		if len(s.Data) > 0 {
			if h.relSeq(s) != uint32(5+len(data)) {
				t.Fatalf("held bytes at %d, want %d: %v", h.relSeq(s), 5+len(data), s)
			}
			data = append(data, s.Data...)
		}
		acked = acked || h.relAck(s) == 21
	}
	if string(data) != "+OK\r\n+OK\r\n" || !acked {
		t.Fatalf("on removal the client got %q (acked %v), want both replies and ack 21: %v", data, acked, out)
	}
	if st := h.f.Stats(); st.HeldSent != 10 {
		t.Fatalf("HeldSent %d, want 10", st.HeldSent)
	}
	// Branch 1's retransmission of those bytes is now acknowledged
	// by the client (ack 15) and passes as a duplicate, no harm.
	h.send(21, nil, 15, 502)
	for _, s := range h.reply(1, 5, []byte("+OK\r\n+OK\r\n"), 21, 500) {
		if s.To == ToClient && len(s.Data) > 0 {
			t.Fatalf("acknowledged bytes forwarded again: %v", s)
		}
	}
}

// The same with the far branch (1) cut: branch 0, which leads, has sent
// replies branch 1 never will; they reach the client on the removal.
func TestRemovalDeliversLeadersExcess(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	h.send(0, []byte("SET a\r\nSET b\r\n"), 0, 502)
	h.ack(1, 14, 500)
	h.reply(0, 0, []byte("+OK\r\n+OK\r\n"), 14, 500) // only an ACK of 14
	var data []byte
	for _, s := range h.remove(1) {
		if s.To == ToClient {
			data = append(data, s.Data...)
		}
	}
	if string(data) != "+OK\r\n+OK\r\n" {
		t.Fatalf("on removal the client got %q", data)
	}
}

// Held bytes are bounded by Config.HoldBytes, and none are kept with a
// negative HoldBytes: then the removal only acknowledges.
func TestHeldBytesBounded(t *testing.T) {
	for _, hold := range []int{-1, 4} {
		h := newHarness(t, 2, Config{HoldBytes: hold})
		h.open()
		h.send(0, []byte("GET k\r\n"), 0, 502)
		h.ack(1, 7, 500)
		h.reply(0, 0, []byte("$3\r\nabc\r\n"), 7, 500)
		var data []byte
		for _, s := range h.remove(1) {
			if s.To == ToClient {
				data = append(data, s.Data...)
			}
		}
		want := "$3\r\n"
		if hold < 0 {
			want = ""
		}
		if string(data) != want {
			t.Fatalf("HoldBytes %d: the client got %q, want %q", hold, data, want)
		}
	}
}

// Held bytes go out only while the branch they were copied from is in the
// flow: branch 1 answers first and is then dropped for a reply mismatch
// (a tie goes against the later branch); the client gets branch 0's reply,
// never branch 1's held bytes.
func TestHeldBytesOfAMismatchedBranchNotSent(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	none(t, h.replyFl(1, 0, []byte("+OX\r\n"), 0, 500, packet.FlagPSH))
	var data []byte
	for _, s := range h.replyFl(0, 0, []byte("+OK\r\n"), 0, 500, packet.FlagPSH) {
		if s.To == ToClient {
			data = append(data, s.Data...)
		}
	}
	if string(data) != "+OK\r\n" || !h.hasEvent(EvBranchRemoved, 1, CauseReplyMismatch) {
		t.Fatalf("client got %q, events %v", data, h.events)
	}
}

// The held bytes change source when another branch sends all of them and
// more: branch 0 (near) holds "+OK" past branch 1's coverage when it is
// cut; branch 1 then sends that reply and the next one in one segment.
// On the removal the client gets the next one at once (branch 1's copy;
// branch 0's held bytes would not count once branch 0 left).
func TestHeldBytesTakenOverBySurvivor(t *testing.T) {
	h := newHarness(t, 2, Config{})
	h.open()
	h.send(0, []byte("SET a\r\nSET b\r\nSET c\r\n"), 0, 502)
	h.reply(0, 0, []byte("+OK\r\n+OK\r\n"), 21, 500)
	only(t, h.reply(1, 0, []byte("+OK\r\n"), 21, 500), ToClient)
	s := only(t, h.reply(1, 5, []byte("+OK\r\n+OK\r\n"), 21, 500), ToClient) // branch 0 is cut
	if h.relSeq(s) != 5 || string(s.Data) != "+OK\r\n" {
		t.Fatalf("forwarded %v %q", s, s.Data)
	}
	var data []byte
	for _, s := range h.remove(0) {
		if s.To == ToClient && len(s.Data) > 0 {
			if h.relSeq(s) != 10 {
				t.Fatalf("held bytes at %d, want 10", h.relSeq(s))
			}
			data = append(data, s.Data...)
		}
	}
	if string(data) != "+OK\r\n" {
		t.Fatalf("on removal the client got %q", data)
	}
}
