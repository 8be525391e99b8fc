package ackmerge

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/script"
	"github.com/sdnkvs/sdnkvs/netstackio/packet"
)

// Data-driven interaction scripts (testdata/*.txt), in the manner of etcd
// raft's: each command is followed by "----" and the trace it must
// produce; `go test -run TestScripts -rewrite` regenerates the traces.
//
// Numbers are relative: client bytes count from the client's SYN, reply
// bytes from the reference branch's SYN (the client's view); packets to
// branch k show the ack in k's own space, relative to its SYN.
//
// Commands:
//
//	flow n=3 [min=2] [handshake=1s] [lag=5s] [linger=1s] [noverify]
//	client syn
//	client [seq=N] [ack=N] [data=TEXT | len=N] [fin] [rst] [wnd=N]
//	branch K synack [mss=N] [ws=N|none] [wnd=N]
//	branch K [seq=N] [ack=N] [data=TEXT | len=N] [fin] [rst] [psh] [wnd=N]
//	open                  (every branch answers, the client ACKs)
//	tick DURATION
//	remove K              (failover removes branch K)
//	state

func TestScripts(t *testing.T) {
	script.RunDir(t, "testdata/*.txt", func() func(*script.Cmd) []string {
		var h *harness
		return func(c *script.Cmd) []string { return runCommand(c, &h) }
	})
}

func runCommand(c *script.Cmd, hp **harness) []string {
	t := c.T
	num := c.Int
	dur := func(k string) time.Duration { return c.Duration(k, 0) }
	has := c.Has
	payload := func() []byte {
		if d, ok := c.Arg("data"); ok {
			s, err := strconv.Unquote(`"` + d + `"`)
			if err != nil {
				c.Fatalf("bad data")
			}
			return []byte(s)
		}
		return make([]byte, num("len", 0))
	}
	flags := func() uint8 {
		var fl uint8
		if has("fin") {
			fl |= packet.FlagFIN
		}
		if has("rst") {
			fl |= packet.FlagRST
		}
		if has("psh") {
			fl |= packet.FlagPSH
		}
		return fl
	}
	pos := c.Pos
	h := *hp
	var segs []seg
	switch c.Name {
	case "flow":
		*hp = newHarness(t, num("n", 1), Config{MinReplicas: num("min", 0), HandshakeTimeout: dur("handshake"),
			BranchTimeout: dur("lag"), Linger: dur("linger"), NoVerify: has("noverify")})
		return nil
	case "open":
		h.events = nil
		sa := h.open()
		return append([]string{h.format(sa)}, h.drainEvents()...)
	case "client":
		if has("syn") {
			segs = h.clientSYN()
		} else {
			segs = h.sendFl(uint32(num("seq", 0)), payload(), uint32(num("ack", 0)), uint16(num("wnd", 502)), flags())
		}
	case "branch":
		k, err := strconv.Atoi(pos[0])
		if err != nil {
			c.Fatalf("branch index")
		}
		if has("synack") {
			ws := 7
			if v, _ := c.Arg("ws"); v == "none" {
				ws = -1
			} else {
				ws = num("ws", 7)
			}
			segs = h.branchSynAck(k, uint16(num("mss", 1460)), ws, uint16(num("wnd", 65535)))
		} else {
			segs = h.replyFl(k, uint32(num("seq", 0)), payload(), uint32(num("ack", 0)), uint16(num("wnd", 500)), flags())
		}
	case "tick":
		d, err := time.ParseDuration(pos[0])
		if err != nil {
			c.Fatalf("duration")
		}
		segs = h.tick(d)
	case "remove":
		k, _ := strconv.Atoi(pos[0])
		segs = h.remove(k)
	case "state":
		r := []string{fmt.Sprintf("state=%v live=%d", h.f.State(), h.f.Live())}
		if st := h.f.Stats(); st.RepliesVerified+st.RepliesUnverified+st.ReplyMismatches > 0 {
			r = append(r, fmt.Sprintf("  replies verified=%d unverified=%d mismatches=%d", st.RepliesVerified, st.RepliesUnverified, st.ReplyMismatches))
		}
		for k := 0; k < h.f.NumBranches(); k++ {
			b := h.f.Branch(k)
			r = append(r, fmt.Sprintf("  b%d live=%v acked=%d covered=%d window=%d fin=%v cause=%v", k, b.Live, b.Acked, b.Covered, b.Window, b.FIN, b.Cause))
		}
		return r
	default:
		c.Fatalf("unknown command")
	}
	var r []string
	for _, s := range segs {
		r = append(r, h.format(s))
	}
	return append(r, h.drainEvents()...)
}

func (h *harness) drainEvents() []string {
	var r []string
	for _, e := range h.events {
		s := "event " + e.Kind.String()
		if e.Branch >= 0 {
			s += fmt.Sprintf(" b%d", e.Branch)
		}
		if e.Cause != CauseNone {
			s += " " + e.Cause.String()
		}
		if e.Cause == CauseReplyMismatch {
			s += fmt.Sprintf(" offset=%d", e.Offset)
		}
		r = append(r, s)
	}
	h.events = nil
	return r
}

func flagString(fl uint8) string {
	var s []string
	for _, x := range []struct {
		f uint8
		n string
	}{{packet.FlagSYN, "SYN"}, {packet.FlagRST, "RST"}, {packet.FlagFIN, "FIN"}, {packet.FlagACK, "ACK"}} {
		if fl&x.f != 0 {
			s = append(s, x.n)
		}
	}
	return strings.Join(s, "|")
}

// format prints an emitted packet in relative numbers.
func (h *harness) format(s seg) string {
	var dst, seq, ack string
	if s.To == ToClient {
		dst = "client"
		ref := h.ref()
		if h.f.haveRef {
			ref = uint32(h.f.issRef)
		}
		seq = strconv.Itoa(int(int32(s.Seq - ref - 1)))
		ack = strconv.Itoa(int(int32(s.Ack - h.cliISS - 1)))
	} else {
		dst = fmt.Sprintf("b%d", s.To)
		seq = strconv.Itoa(int(int32(s.Seq - h.cliISS - 1)))
		ack = strconv.Itoa(int(int32(s.Ack - h.iss[s.To] - 1)))
	}
	if s.Flags&packet.FlagACK == 0 {
		ack = "-"
	}
	r := fmt.Sprintf("-> %s %s seq=%s ack=%s wnd=%d", dst, flagString(s.Flags), seq, ack, s.Wnd)
	if len(s.Data) > 0 {
		if len(s.Data) <= 16 {
			r += fmt.Sprintf(" data=%q", s.Data)
		} else {
			r += fmt.Sprintf(" len=%d", len(s.Data))
		}
	}
	if s.Flags&packet.FlagSYN != 0 {
		if mss, ws, ok := synSummary(s.Opts); ok {
			r += fmt.Sprintf(" mss=%d ws=%s", mss, ws)
		}
		if hasOpt(s.Opts, packet.OptSACKPermitted) {
			r += " sackok"
		}
		if hasOpt(s.Opts, packet.OptTimestamps) {
			r += " ts"
		}
	}
	return r
}

func synSummary(o []byte) (int, string, bool) {
	mss, ws := 0, "none"
	for i := 0; i < len(o); {
		switch o[i] {
		case packet.OptEnd:
			i = len(o)
			continue
		case packet.OptNOP:
			i++
			continue
		}
		if i+1 >= len(o) || o[i+1] < 2 {
			break
		}
		switch {
		case o[i] == packet.OptMSS && o[i+1] == 4:
			mss = int(o[i+2])<<8 | int(o[i+3])
		case o[i] == packet.OptWindowScale && o[i+1] == 3:
			ws = strconv.Itoa(int(o[i+2]))
		}
		i += int(o[i+1])
	}
	return mss, ws, true
}
