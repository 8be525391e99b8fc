package middlebox

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// TestReplyMismatchDropsDCThroughMemnet: two DCs behind the middlebox
// answer a forked connection's line protocol; dublin holds a corrupt
// record. Writes answer "+OK" alike, so the connection runs on both; the
// first read of the corrupt record differs, and dublin (the later DC in
// the branch order: with two DCs a difference is a tie, docs/design.md
// section 4) is dropped from the flow with cause reply-mismatch and
// counted, while the client gets sydney's answer, never dublin's, and the
// connection goes on.
func TestReplyMismatchDropsDCThroughMemnet(t *testing.T) {
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	r := newRig(t, cfg, func(c net.Conn) {
		defer c.Close()
		val := "v"
		if strings.HasPrefix(c.LocalAddr().String(), dub1.Addr().String()) {
			val = "x" // dublin's copy of the record is corrupt
		}
		rd := bufio.NewReader(c)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			var out string
			switch strings.TrimSpace(line) {
			case "SET":
				out = "+OK\r\n"
			case "GET":
				out = "$1\r\n" + val + "\r\n"
			default:
				out = "-ERR\r\n"
			}
			if _, err := io.WriteString(c, out); err != nil {
				return
			}
		}
	})
	c := r.dial(t, 6379)
	rd := bufio.NewReader(c)
	ask := func(req, want string) {
		t.Helper()
		if _, err := io.WriteString(c, req+"\n"); err != nil {
			t.Fatalf("%s: %v", req, err)
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(rd, got); err != nil {
			t.Fatalf("%s: read: %v (got %q); middlebox %+v", req, err, got, r.mb.Stats())
		}
		if string(got) != want {
			t.Fatalf("%s: got %q, want %q", req, got, want)
		}
	}
	ask("SET", "+OK\r\n")
	ask("SET", "+OK\r\n")
	if n := r.mb.c.branchesRemoved.Load(); n != 0 {
		t.Fatalf("%d branches removed while the DCs agree", n)
	}
	ask("GET", "$1\r\nv\r\n")
	testenv.WaitFor(t, 10*time.Second, "dublin's branch removed for reply mismatch", func() bool {
		return r.mb.c.replyMismatches.Load() == 1
	})
	fl := r.mb.Flows(0)
	if len(fl) != 1 || len(fl[0].Branches) != 2 || fl[0].Fork == nil {
		t.Fatalf("flows %+v", fl)
	}
	b := fl[0].Branches
	if !b[0].Live || b[1].Live || b[1].Cause != "reply-mismatch" || b[1].Node != dub1.String() {
		t.Fatalf("branches %+v, want dublin (%v) removed for reply-mismatch", b, dub1)
	}
	if fl[0].Fork.ReplyMismatches != 1 || fl[0].Fork.RepliesVerified < 2 {
		t.Fatalf("fork stats %+v", *fl[0].Fork)
	}
	// The connection goes on with sydney alone.
	ask("SET", "+OK\r\n")
	ask("GET", "$1\r\nv\r\n")
	if n := r.mb.c.branchesRemoved.Load(); n != 1 {
		t.Fatalf("%d branches removed, want 1", n)
	}
}
