package middlebox

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
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
	r := newRig(t, cfg, corruptDublin)
	logs := &captureLog{}
	r.mb.log = slog.New(logs)
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
	// The log shows both replies, quoted and bounded, with the offset.
	rec := logs.find("forked flow: DC replied different bytes; branch removed")
	if rec == nil {
		t.Fatalf("no mismatch log; logs %v", logs.all())
	}
	if rec["dc"] != "dublin" || rec["peer_dc"] != "sydney" || rec["offset"] != "10" ||
		rec["bytes"] != `[0,17) "+OK\r\n+OK\r\n$1\r\nx\r\n"` || rec["peer_bytes"] != `[0,17) "+OK\r\n+OK\r\n$1\r\nv\r\n"` {
		t.Fatalf("mismatch log %v", rec)
	}
	// The connection goes on with sydney alone.
	ask("SET", "+OK\r\n")
	ask("GET", "$1\r\nv\r\n")
	if n := r.mb.c.branchesRemoved.Load(); n != 1 {
		t.Fatalf("%d branches removed, want 1", n)
	}
}

// captureLog is a slog.Handler keeping every record's message and
// attributes (as strings). Safe for concurrent use.
type captureLog struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (c *captureLog) Enabled(context.Context, slog.Level) bool { return true }
func (c *captureLog) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *captureLog) WithGroup(string) slog.Handler            { return c }
func (c *captureLog) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	c.mu.Lock()
	c.recs = append(c.recs, m)
	c.mu.Unlock()
	return nil
}

func (c *captureLog) find(msg string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.recs {
		if m["msg"] == msg {
			return m
		}
	}
	return nil
}

func (c *captureLog) all() []map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]string(nil), c.recs...)
}

// Mismatch logs are rate-limited: mismatchLogBurst per mismatchLogEvery,
// the next one logged says how many were left out.
func TestMismatchLogRateLimited(t *testing.T) {
	var l mismatchLog
	t0 := time.Unix(1000, 0)
	for i := range mismatchLogBurst + 3 {
		ok, s := l.allow(t0.Add(time.Duration(i) * time.Millisecond))
		if want := i < mismatchLogBurst; ok != want || s != 0 {
			t.Fatalf("log %d: allowed %v (suppressed %d), want %v", i, ok, s, want)
		}
	}
	ok, s := l.allow(t0.Add(mismatchLogEvery))
	if !ok || s != 3 {
		t.Fatalf("next period: allowed %v, suppressed %d; want true, 3", ok, s)
	}
}

// corruptDublin is a fake kvs node whose DC dublin holds a corrupt copy
// of the record: one request a line, "SET" answers +OK, "GET" the value
// (v, or x on dublin's node), anything else -ERR.
func corruptDublin(c net.Conn) {
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
}
