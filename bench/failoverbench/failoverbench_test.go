//go:build linux

package failoverbench

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestMain(m *testing.M) { testbedtest.Main(m) }

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Bin: "/x"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Detectors) != 2 || c.Detectors[0] != "paper" || c.Detectors[1] != "fast" || c.Nodes() != 9 || c.DCs[1].Delay != 170*time.Millisecond ||
		c.PingEvery != 50*time.Millisecond || c.ClientRTOMin != 0 {
		t.Errorf("defaults: %+v", c)
	}
	for name, bad := range map[string]Config{
		"no binary":  {},
		"detector":   {Bin: "/x", Detectors: []string{"psychic"}},
		"cut late":   {Bin: "/x", CutAt: time.Minute, Duration: time.Second},
		"cuts":       {Bin: "/x", Cuts: -1},
		"rto_min":    {Bin: "/x", ClientRTOMin: -time.Second},
		"rto_min ns": {Bin: "/x", ClientRTOMin: time.Microsecond},
		"ping":       {Bin: "/x", PingEvery: time.Microsecond},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if m := median([]time.Duration{5, 1, 3}); m != 3 {
		t.Errorf("median = %v, want 3", m)
	}
}

// A short Fig. 6 run with both detectors and two cuts under write load:
// the paper's Algorithm 1 alone detects the cut (the reader's PINGs are
// retransmitted into the dead DC), the fast detector recovers sooner, the
// anycast reader resumes on the far DC in both, forked writes resume
// without a reset after each cut, and no acknowledged write is lost.
func TestFailoverAndCuts(t *testing.T) {
	testenv.RequireRoot(t)
	out := t.TempDir()
	res, err := Run(context.Background(), Config{
		Bin: testbedtest.SharedBinary(t), Topology: scenario.Topology{DCs: []testbed.DC{
			{Name: "sydney", Nodes: 3, Delay: 2 * time.Millisecond, Rate: 100e6},
			{Name: "dublin", Nodes: 3, Delay: 20 * time.Millisecond, Rate: 100e6},
		}},
		Detectors: []string{"paper", "fast"}, CutAt: 2 * time.Second, Duration: 20 * time.Second, Until: time.Second,
		Cuts: 2, CutsRate: 300, DataDir: t.TempDir(), Out: out, Log: testbedtest.Log(t), Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Print(testbedtest.Log(t))
	if len(res.Runs) != 2 {
		t.Fatalf("%d detector runs, want 2", len(res.Runs))
	}
	for _, r := range res.Runs {
		if r.NodeDown < 0 || r.RTO < 0 || r.RTOFull < r.RTO {
			t.Errorf("detector %s: detected after %v, RTO %v, full value after %v: want a detection and a far reply, first byte before the full value", r.Detector, r.NodeDown, r.RTO, r.RTOFull)
		}
		if r.RTO >= 0 && r.RTO < r.NodeDown {
			t.Errorf("detector %s: far reply %v after the cut, before the detection %v", r.Detector, r.RTO, r.NodeDown)
		}
		var near, far, pings int
		for _, s := range r.Samples {
			switch {
			case s.Done < r.CutAt && s.DC == "sydney":
				near++
			case s.Sent >= r.CutAt && s.DC == "dublin":
				far++
			}
			if s.Kind == KindPING {
				pings++
			}
		}
		if near == 0 || far == 0 || pings == 0 {
			t.Errorf("detector %s: replies from sydney before the cut %d, from dublin after %d, PINGs answered %d: want all > 0", r.Detector, near, far, pings)
		}
	}
	if paper, fast := res.Runs[0], res.Runs[1]; fast.RTO >= paper.RTO {
		t.Errorf("fast RTO %v, paper RTO %v: want fast < paper", fast.RTO, paper.RTO)
	}
	if len(res.Cuts) != 2 {
		t.Fatalf("%d cuts recorded, want 2", len(res.Cuts))
	}
	for _, c := range res.Cuts {
		if c.RTOWrite < 0 || c.WriteResets != 0 || c.Readmitted < 0 {
			t.Errorf("cut %d: writes resumed after %v, %d write resets, readmitted after %v", c.N, c.RTOWrite, c.WriteResets, c.Readmitted)
		}
	}
	if res.AckedWrites == 0 || res.RPOLost != 0 {
		t.Errorf("RPO: %d lost of %d acknowledged, want 0 of > 0", res.RPOLost, res.AckedWrites)
	}
	for _, f := range []string{"failover-rtt.csv", "failover-throughput.csv", "failover-summary.csv", "failover-rtt.png", "failover-throughput.png", "failover-cuts.csv"} {
		if st, err := os.Stat(out + "/" + f); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}

// TestReplyOf checks what the reader keeps of replies read by the one
// RESP reader (package resp tests the reader on bad input).
func TestReplyOf(t *testing.T) {
	mget := "*2\r\n$6\r\ndublin\r\n$5\r\nhello\r\n"
	for _, tc := range []struct {
		in          string
		kind        byte
		text, first string
		nbulk, last int
	}{
		{mget, '*', "", "dublin", 2, 5},
		{"+PONG\r\n", '+', "PONG", "", 0, 0},
		{"-ERR nope\r\n", '-', "ERR nope", "", 0, 0},
		{":12\r\n", ':', "", "", 0, 0},
		{"$-1\r\n", '$', "", "", 0, 0},
		{"*2\r\n$-1\r\n*1\r\n$2\r\nab\r\n", '*', "", "ab", 1, 2},
	} {
		br := bufio.NewReader(strings.NewReader(tc.in + "+NEXT\r\n"))
		rp, err := resp.ReadReply(br)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if r := replyOf(rp); r.kind != tc.kind || r.text != tc.text || r.first != tc.first || r.nbulk != tc.nbulk || r.last != tc.last {
			t.Errorf("%q: got %+v", tc.in, r)
		}
		// The reader stops exactly at the end of the reply.
		if next, err := resp.ReadReply(br); err != nil || string(next.Str) != "NEXT" {
			t.Errorf("%q: the following reply reads as %+v, %v", tc.in, next, err)
		}
	}
	// A value larger than the reader's buffer is counted, the marker kept.
	big := strings.Repeat("x", 100<<10)
	br := bufio.NewReaderSize(strings.NewReader("*2\r\n$6\r\nsydney\r\n$"+strconv.Itoa(len(big))+"\r\n"+big+"\r\n"), 4096)
	rp, err := resp.ReadReply(br)
	if r := replyOf(rp); err != nil || r.first != "sydney" || r.last != len(big) {
		t.Errorf("big value: %+v, %v", r, err)
	}
}

// fakeConn returns its chunks one Read at a time.
type fakeConn struct {
	net.Conn
	chunks []string
}

func (c *fakeConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func TestTimedConnArrivals(t *testing.T) {
	bins := make([]int64, 10)
	c := &timedConn{Conn: &fakeConn{chunks: []string{"abc", "defg", "h"}}, start: time.Now(), bins: bins}
	buf := make([]byte, 16)
	var ats []time.Duration
	for range 3 {
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		ats = append(ats, c.ring[c.n-1].at)
	}
	for off, want := range []int{0, 0, 0, 1, 1, 1, 1, 2} {
		if got := c.arrivedAt(int64(off)); got != ats[want] {
			t.Errorf("byte %d arrived at %v, want read %d's %v", off, got, want, ats[want])
		}
	}
	var sum int64
	for _, b := range bins {
		sum += b
	}
	if sum != 8 || c.total != 8 {
		t.Errorf("bins sum %d, total %d: want 8", sum, c.total)
	}
}

func TestSummarize(t *testing.T) {
	s := time.Second
	r := DetectorRun{CutAt: 5 * s, RTO: -1, RTOFull: -1, FirstReply: -1, ConnLost: -1}
	r.Samples = []Sample{
		{Kind: KindMGET, Sent: 4 * s, First: 4*s + 10*time.Millisecond, Done: 4*s + 20*time.Millisecond, DC: "sydney"},
		// sent before the cut, answered after: not a recovery
		{Kind: KindPING, Sent: 5*s - time.Millisecond, First: 5*s + time.Millisecond, Done: 5*s + time.Millisecond, DC: "sydney"},
		{Kind: KindMGET, Sent: 6 * s, First: 6*s + 340*time.Millisecond, Done: 7 * s, DC: "dublin", Conn: 1},
		{Kind: KindPING, Sent: 6*s + 50*time.Millisecond, First: 7 * s, Done: 7 * s, DC: "dublin", Conn: 1},
		{Kind: KindMGET, Sent: 7 * s, First: 7*s + 340*time.Millisecond, Done: 7*s + 400*time.Millisecond, DC: "dublin", Conn: 1},
	}
	r.summarize("dublin", []time.Duration{5*s + 500*time.Millisecond})
	if r.RTO != 1340*time.Millisecond || r.RTOFull != 2*s || r.FirstReply != r.RTO || r.ConnLost != 500*time.Millisecond {
		t.Errorf("RTO %v, full %v, first reply %v, conn lost %v: want 1.34s, 2s, 1.34s, 0.5s", r.RTO, r.RTOFull, r.FirstReply, r.ConnLost)
	}
	if r.NearRTT != 20*time.Millisecond || r.FarRTT != s {
		t.Errorf("near RTT %v, far RTT %v: want 20ms, 1s (median of 1s and 400ms)", r.NearRTT, r.FarRTT)
	}
}

// The client's routes get the rto_min, and a socket connected afterwards
// uses it.
func TestClientRTOMin(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ss")
	tb := testbedtest.ForTest(t, testbed.Config{DCs: []testbed.DC{{Name: "near"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := setClientRTOMin(ctx, tb, 700*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := testbed.InNetns(testbed.NetnsPath(tb.NS("gw")), func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(testbed.GatewayClientAddr.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	c, err := testbed.DialInNetns(ctx, tb.NS("client"), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := tb.Exec(ctx, "client", "ss", "-tin", "dst", testbed.GatewayClientAddr.String())
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	m := regexp.MustCompile(`\brto:([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("ss shows no rto:\n%s", out)
	}
	if rto, _ := strconv.ParseFloat(string(m[1]), 64); rto < 700 {
		t.Errorf("socket rto %vms, want >= rto_min 700ms:\n%s", rto, out)
	}
}
