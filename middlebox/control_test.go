package middlebox

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestBadInputThroughMemPipe writes bad packets into the middlebox's
// device while a flow is live: each is dropped and counted by reason, and
// the flow keeps forwarding.
func TestBadInputThroughMemPipe(t *testing.T) {
	r := newRig(t, testConfig(), whoServer)
	c := r.dial(t, anyPort)
	readLine(t, c)
	echo := func(s string) {
		t.Helper()
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(s))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != s {
			t.Fatalf("echo %q: got %q, %v", s, b, err)
		}
	}
	echo("before")

	good := mkTCP(tcpSpec{src: netip.MustParseAddrPort("10.200.1.2:999"), dst: vipAny, flags: header.TCPFlagSyn, seq: 7})
	frag := clone(good)
	header.IPv4(frag).SetFlagsFragmentOffset(0, 8)
	fixIP(frag)
	badTCP := clone(good)
	badTCP[36] ^= 0x10
	bad := []struct {
		reason Reason
		pkt    []byte
	}{
		{ReasonTruncated, good[:30]},
		{ReasonNotIP, []byte("\x00garbage garbage garbage garbage garbage")},
		{ReasonBadIPChecksum, func() []byte { b := clone(good); b[11]++; return b }()},
		{ReasonFragment, frag},
		{ReasonBadTCPChecksum, badTCP},
		{ReasonUnknownFlow, mkTCP(tcpSpec{src: netip.MustParseAddrPort("10.200.1.2:998"), dst: vipAny, flags: header.TCPFlagRst, seq: 5})},
		{ReasonUnknownFlow, mkTCP(tcpSpec{src: dub1, dst: netip.MustParseAddrPort("10.200.1.2:997"), flags: header.TCPFlagAck})},
	}
	want := map[Reason]uint64{}
	for _, b := range bad {
		if !r.net.SendToMiddlebox(b.pkt) {
			t.Fatal("SendToMiddlebox failed")
		}
		want[b.reason]++
	}
	testenv.WaitFor(t, 5*time.Second, "bad packets to be counted", func() bool {
		for reason, n := range want {
			if r.mb.Drop(reason) != n {
				return false
			}
		}
		return true
	})
	echo("after")
	if s := r.mb.Stats(); s.FlowsActive != 1 || s.FlowsCreated != 1 {
		t.Errorf("flows active %d created %d, want 1 and 1", s.FlowsActive, s.FlowsCreated)
	}
}

func TestControlAPI(t *testing.T) {
	r := newRig(t, testConfig(), whoServer)
	c := r.dial(t, anyPort)
	node := readLine(t, c)
	r.mb.SetNodeLive(dub1, false)
	srv := httptest.NewServer(r.mb.Handler())
	defer srv.Close()
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(b)
	}
	if got := get("/healthz"); got != "ok\n" {
		t.Errorf("/healthz = %q", got)
	}
	var flows []FlowInfo
	if err := json.Unmarshal([]byte(get("/flows")), &flows); err != nil {
		t.Fatal(err)
	}
	if len(flows) != 1 || flows[0].Client[:10] != "10.200.1.2" || flows[0].VIPPort != anyPort || flows[0].Nodes[0] != node || flows[0].Kind != "anycast" || flows[0].State != "established" || flows[0].BytesOut == 0 {
		t.Errorf("/flows = %+v (node %s)", flows, node)
	}
	var dcs []DCInfo
	if err := json.Unmarshal([]byte(get("/dcs")), &dcs); err != nil {
		t.Fatal(err)
	}
	if len(dcs) != 2 || dcs[0].Name != "sydney" || dcs[1].Name != "dublin" || !dcs[0].Live || dcs[1].Live || len(dcs[0].Nodes) != 2 {
		t.Errorf("/dcs = %+v", dcs)
	}
	metrics := get("/metrics")
	for _, want := range []string{
		`sdnkvs_middlebox_flows_active 1`,
		`sdnkvs_middlebox_flows_created_total 1`,
		`sdnkvs_middlebox_drops_total{reason="bad_ip_checksum"} 0`,
		`sdnkvs_middlebox_node_flows_active{dc="sydney",node="` + node + `"} 1`,
		`sdnkvs_middlebox_node_live{dc="dublin",node="10.210.2.11:6379"} 0`,
		`sdnkvs_middlebox_packets_in_total `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestNoGoroutineLeak: a middlebox with a memnet, a flow, probes and
// forked ports leaves no goroutine behind after Close.
func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("run", func(t *testing.T) {
		cfg := testConfig()
		cfg.MulticastPorts = []uint16{6379}
		cfg.Failover = &FailoverConfig{Detector: failover.Config{Mode: failover.Fast}}
		r := newRig(t, cfg, whoServer)
		c := r.dial(t, anyPort)
		readLine(t, c)
	})
	testenv.WaitFor(t, 5*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
}
