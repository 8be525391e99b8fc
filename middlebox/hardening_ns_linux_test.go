package middlebox

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Issue 11's reproductions with kernel TCP in namespaces: the client
// namespace plays the hostile client with a raw socket.

const nsForkPort = 6390

// newHardRig is newNSRig with a failure detector (mode; probes of each
// node's /ready on 8379, dialled from the gateway) and echo servers on
// 6379 and readiness servers on 8379 in every DC.
func newHardRig(t *testing.T, mode failover.Mode, tweak ...func(*Config)) *nsRig {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	tb := testbedtest.ForTest(t, testbed.Config{DCs: []testbed.DC{{Name: "sydney", Nodes: 2}, {Name: "dublin", Nodes: 1}}})
	var cfg Config
	cfg.VIP = testbed.VIP
	cfg.AnycastPorts = []uint16{anyPort}
	cfg.MulticastPorts = []uint16{nsForkPort}
	if mode != failover.None {
		det := failover.DefaultConfig()
		det.Mode = mode
		gw := tb.NS("gw")
		cfg.Failover = &FailoverConfig{Detector: det, Probe: prober.HTTP, Prober: prober.Config{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return testbed.DialInNetns(ctx, gw, network, addr)
			}}}
	}
	for _, f := range tweak {
		f(&cfg)
	}
	r := &nsRig{tb: tb}
	for _, dc := range []string{"sydney", "dublin"} {
		r.listen(t, dc, 6379, echo)
		var ln net.Listener
		if err := netstackio.InNetns(testbed.NetnsPath(tb.NS(dc)), func() error {
			var err error
			ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", prober.ReadyPort))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ready\n")) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	r.mb = runInGateway(t, tb, netstackio.ModeOffload, cfg, 6379)
	if cfg.Failover != nil {
		testenv.WaitFor(t, 10*time.Second, "probes of every node to answer", func() bool {
			for i := range 3 {
				if st, ok := r.mb.failoverNode(i); !ok || st.LastHeard.IsZero() {
					return false
				}
			}
			return true
		})
	}
	return r
}

func echo(c net.Conn) {
	defer c.Close()
	io.Copy(c, c)
}

// echoOK checks that c still carries data both ways.
func echoOK(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	b := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, b, err)
	}
}

// rawSend sends IPv4 packets (with their own headers) from namespace role.
func (r *nsRig) rawSend(t *testing.T, role string, pkts ...[]byte) {
	t.Helper()
	err := netstackio.InNetns(testbed.NetnsPath(r.tb.NS(role)), func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, p := range pkts {
			dst := header.IPv4(p).DestinationAddress().As4()
			if err := unix.Sendto(fd, p, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raw send from %s: %v", role, err)
	}
}

// dcsDown returns the names of the DCs with no live node.
func (r *nsRig) dcsDown() []string {
	var down []string
	for _, d := range r.mb.DCs() {
		if !d.Live {
			down = append(down, d.Name)
		}
	}
	return down
}

// probesSeen returns how many probe results the detector has taken.
func (r *nsRig) probesSeen() uint64 {
	r.mb.flows.Lock()
	defer r.mb.flows.Unlock()
	return r.mb.flows.det.Stats().Probes
}

// Issue 11, critical: six identical SYNs from one client to either port
// took a DC (forked: every DC) down in paper and fast mode, resetting
// unrelated clients. With the default detector (safe), and with fast,
// nothing goes down and a victim's connections to both ports live on.
func TestNetnsSYNBurstTakesNothingDown(t *testing.T) {
	for _, mode := range []failover.Mode{failover.Safe, failover.Fast} {
		t.Run(mode.String(), func(t *testing.T) {
			r := newHardRig(t, mode)
			victimAny := r.dial(t)
			victimFork := r.dialPort(t, nsForkPort)
			echoOK(t, victimAny, "before")
			echoOK(t, victimFork, "before")
			attacker := netip.AddrPortFrom(testbed.ClientAddrN(1), 50000)
			var burst [][]byte
			for _, port := range []uint16{anyPort, nsForkPort} {
				for range 6 {
					burst = append(burst, synFrom(attacker, netip.AddrPortFrom(testbed.VIP, port), 4242))
				}
			}
			// 48 SYNs (8 flows x 6) after idle, as in the fast-mode report.
			for f := range 8 {
				for range 6 {
					burst = append(burst, synFrom(netip.AddrPortFrom(testbed.ClientAddrN(1), uint16(51000+f)), vipAny, 77))
				}
			}
			base := r.probesSeen()
			r.rawSend(t, "client", burst...)
			// Let the detector run: 30 probe results (about 1 s of probes of
			// 3 nodes) past the silence threshold of an idle node.
			testenv.WaitFor(t, 20*time.Second, "30 probe results after the burst", func() bool { return r.probesSeen() >= base+30 })
			if down := r.dcsDown(); len(down) != 0 {
				t.Fatalf("SYN burst took down %v", down)
			}
			echoOK(t, victimAny, "after")
			echoOK(t, victimFork, "after")
		})
	}
}

// Issue 11, medium: a blind RST (any sequence number) deleted the flow and
// black-holed the connection. Now only the exact RST acts; the victim's
// connection survives RSTs behind and ahead of its node's rcv.nxt.
func TestNetnsBlindRSTConnectionSurvives(t *testing.T) {
	r := newHardRig(t, failover.None)
	c := r.dial(t)
	echoOK(t, c, "hello")
	victim := netip.MustParseAddrPort(c.LocalAddr().String())
	var rsts [][]byte
	for _, seq := range []uint32{1, 1 << 30, 3 << 30, 0xfffffff0, 12345678} {
		rsts = append(rsts, mkTCP(tcpSpec{src: victim, dst: vipAny, flags: header.TCPFlagRst, seq: seq}))
	}
	r.rawSend(t, "client", rsts...)
	testenv.WaitFor(t, 5*time.Second, "the RSTs to reach the middlebox", func() bool {
		return r.mb.Drop(ReasonRSTOutOfWindow)+r.mb.c.rstPassed.Load() >= uint64(len(rsts))
	})
	echoOK(t, c, "still here")
	if s := r.mb.Stats(); s.FlowsReset != 0 {
		t.Fatalf("%d flows reset by blind RSTs", s.FlowsReset)
	}
}

// Issue 11, medium: the reply rules had no iif, so replies forged on the
// client side in a node's name went through the middlebox (and counted as
// the node's liveness). Now they never reach it, and packets to the VIP
// from a node's address are dropped and counted.
func TestNetnsForgedNodeRepliesFromClientSide(t *testing.T) {
	r := newHardRig(t, failover.None)
	gw := r.tb.NS("gw")
	// Make sure reverse-path filtering is not what stops them.
	out, err := exec.Command("ip", "-n", gw, "route", "get", testbed.ClientAddrN(1).String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ip route get: %v: %s", err, out)
	}
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "dev" && i+1 < len(f) {
			for _, k := range []string{"all", f[i+1]} {
				if out, err := exec.Command("ip", "netns", "exec", gw, "sysctl", "-w", "net.ipv4.conf."+k+".rp_filter=0").CombinedOutput(); err != nil {
					t.Fatalf("sysctl: %v: %s", err, out)
				}
			}
		}
	}
	c := r.dial(t)
	echoOK(t, c, "hello")
	victim := netip.MustParseAddrPort(c.LocalAddr().String())
	node := netip.AddrPortFrom(testbed.NodeAddr(1, 0), 6379)
	var forged [][]byte
	for i := range 20 {
		// As the node, to a client behind the gateway (off the attacker's link).
		forged = append(forged, mkTCP(tcpSpec{src: node, dst: netip.AddrPortFrom(testbed.ClientAddrN(2), victim.Port()), flags: header.TCPFlagAck | header.TCPFlagPsh, seq: uint32(i), ack: 1, payload: []byte("forged")}))
	}
	for i := range 20 {
		// As the node, to the VIP.
		forged = append(forged, mkTCP(tcpSpec{src: netip.AddrPortFrom(node.Addr(), uint16(40000+i)), dst: vipAny, flags: header.TCPFlagSyn, seq: 1}))
	}
	before := r.mb.Stats()
	r.rawSend(t, "client", forged...)
	testenv.WaitFor(t, 5*time.Second, "20 spoofed_node drops", func() bool { return r.mb.Drop(ReasonSpoofedNode) == 20 })
	after := r.mb.Stats()
	// The forged replies, had they reached the middlebox, would be
	// unknown_flow drops (no flow to 10.200.2.2); the victim's own
	// packets may arrive meanwhile.
	if after.Drops["unknown_flow"] != before.Drops["unknown_flow"] {
		t.Fatalf("forged node replies reached the middlebox: unknown_flow %d -> %d", before.Drops["unknown_flow"], after.Drops["unknown_flow"])
	}
	echoOK(t, c, "still here")
}

// Issue 11: 262,144 SYN-only flows from 4 addresses filled the table for
// 5 minutes and a legitimate client got a RST. Now the flood holds at most
// the 4 sources' quotas and a legitimate client connects at once.
func TestNetnsHalfOpenFloodThenLegitimateClient(t *testing.T) {
	r := newHardRig(t, failover.None)
	const total = 262144
	batch := make([][]byte, 0, 4096)
	for i := 0; i < total; i++ {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, 1, byte(100 + i%4)}), uint16(1024+i/4%64000))
		batch = append(batch, synFrom(src, vipAny, uint32(i)))
		if len(batch) == cap(batch) {
			r.rawSend(t, "client", batch...)
			batch = batch[:0]
		}
	}
	testenv.WaitFor(t, 10*time.Second, "the flood to be counted", func() bool {
		return r.mb.Drop(ReasonHalfOpenQuota) > 0 && r.mb.Stats().FlowsActive >= 4*DefaultMaxHalfOpenPerSource
	})
	if n := r.mb.Stats().FlowsActive; n > 4*DefaultMaxHalfOpenPerSource {
		t.Fatalf("%d flows after the flood, want at most %d", n, 4*DefaultMaxHalfOpenPerSource)
	}
	c := r.dial(t)
	echoOK(t, c, "legitimate")
	t.Logf("flood: %d SYNs sent, %d flows held, %d dropped over quota, %d table_full", total, r.mb.Stats().FlowsActive, r.mb.Drop(ReasonHalfOpenQuota), r.mb.Drop(ReasonTableFull))
}

// Issue 11: 65,536 flows blinded the detector (untracked flows were
// ignored) and a real outage then went undetected. Now a flood of SYN
// flows from 300 addresses (more flows than the detector tracks: 4,096
// here, 65,536 by default) is followed by a cut of sydney: the default
// detector still takes it down, the victim's anycast connection is reset,
// and its reconnection lands in dublin.
func TestNetnsDetectorFloodThenOutageDetected(t *testing.T) {
	r := newHardRig(t, failover.Safe, func(c *Config) { c.Failover.Detector.MaxFlows = 4096 })
	victim := r.dial(t)
	echoOK(t, victim, "before")
	var batch [][]byte
	for i := 0; i < 300*30; i++ {
		a := i / 30
		s := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 201, byte(a / 200), byte(1 + a%200)}), uint16(1024+i%30))
		batch = append(batch, synFrom(s, vipAny, 1))
		if len(batch) == 256 {
			// Paced: the TUN's queue holds a few hundred packets.
			in := r.mb.Stats().PacketsIn
			r.rawSend(t, "client", batch...)
			testenv.WaitFor(t, 5*time.Second, "a batch of SYNs taken in", func() bool { return r.mb.Stats().PacketsIn >= in+200 })
			batch = batch[:0]
		}
	}
	r.mb.flows.Lock()
	ds, tracked := r.mb.flows.det.Stats(), r.mb.flows.det.NumFlows()
	r.mb.flows.Unlock()
	t.Logf("flood: %d flows in the table, detector tracks %d, evicted %d", r.mb.Stats().FlowsActive, tracked, ds.FlowsEvicted)
	if ds.FlowsEvicted == 0 {
		t.Fatal("the flood did not fill the detector's table")
	}
	if err := r.tb.Cut("sydney"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "sydney declared down", func() bool {
		d := r.dcsDown()
		return len(d) == 1 && d[0] == "sydney"
	})
	victim.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := victim.Read(make([]byte, 1)); err == nil {
		t.Fatal("the victim's connection to the cut DC was not reset")
	}
	c := r.dial(t)
	echoOK(t, c, "after")
	if got := c.RemoteAddr().String(); got != vipAny.String() {
		t.Fatalf("reconnected to %s", got)
	}
	for _, f := range r.mb.Flows(0) {
		if f.Client == c.LocalAddr().String() && f.DC != "dublin" {
			t.Fatalf("reconnection served by %s, want dublin", f.DC)
		}
	}
}
