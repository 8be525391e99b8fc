package failover

import (
	"testing"
	"time"
)

// ruleCases: one script per rule (and per sentence of the paper's section
// 3.3). Topology: sydney n0..n(k-1), dublin nk..n(2k-1), k = perDC.
var ruleCases = []struct {
	name   string
	mode   Mode
	perDC  int
	cfg    func(*Config)
	script string
}{
	{
		name: "paper/threshold counts duplicate client segments",
		mode: Paper, perDC: 1,
		script: `
at 0    client f n0 seq=1000 len=100
at 300  client f n0 seq=1000 len=100
check dups n0 1
at 900  client f n0 seq=1000 len=100
at 2100 client f n0 seq=1000 len=100
at 4500 client f n0 seq=1000 len=100
check dups n0 4
check up n0
at 9300 client f n0 seq=1000 len=100 -> NodeDown n0 duplicates, DCDown sydney nodes
check down n0
check dcdown sydney
check preferred dublin`,
	},
	{
		name: "paper/the action redirects the whole service: every node of the DC goes down",
		mode: Paper, perDC: 3,
		script: `
at 0    client f n0 seq=1000 len=100
at 300  client f n0 seq=1000 len=100
at 900  client f n0 seq=1000 len=100
at 2100 client f n0 seq=1000 len=100
at 4500 client f n0 seq=1000 len=100
check up n1
at 9300 client f n0 seq=1000 len=100 -> NodeDown n0 duplicates, NodeDown n1 duplicates, NodeDown n2 duplicates, DCDown sydney nodes
check down n1
check down n2
check up n3
check preferred dublin`,
	},
	{
		name: "paper/any server packet resets the count, on any flow",
		mode: Paper, perDC: 1,
		script: `
at 0   client a n0 seq=1000 len=100
at 1   client b n0 seq=5000 len=10
at 10  client a n0 seq=1000 len=100
at 20  client a n0 seq=1000 len=100
at 30  client a n0 seq=1000 len=100
at 40  client a n0 seq=1000 len=100
check dups n0 4
at 41  server b n0 ack=5010
check dups n0 0
at 50  client a n0 seq=1000 len=100
at 60  client a n0 seq=1000 len=100
at 70  client a n0 seq=1000 len=100
at 80  client a n0 seq=1000 len=100
check up n0
at 90  client a n0 seq=1000 len=100 -> NodeDown n0 duplicates, DCDown sydney nodes`,
	},
	{
		name: "paper/a server RST also resets (a packet from the service)",
		mode: Paper, perDC: 1,
		script: `
at 0   client a n0 seq=1000 len=100
at 10  client a n0 seq=1000 len=100
at 20  client a n0 seq=1000 len=100
check dups n0 2
at 21  server a n0 flags=R
check dups n0 0`,
	},
	{
		name: "paper/retransmission after the server spoke is not counted (fast retransmit)",
		mode: Paper, perDC: 1,
		script: `
at 0  client f n0 seq=1000 len=100
at 1  client f n0 seq=1100 len=100
at 2  client f n0 seq=1200 len=100
at 10 server f n0 ack=1000
at 11 server f n0 ack=1000
at 12 client f n0 seq=1000 len=100
check dups n0 0
# the server is silent after that retransmission: the next one counts
at 212 client f n0 seq=1000 len=100
check dups n0 1
# new data, then its retransmission counts too
at 213 client f n0 seq=1300 len=100
at 500 client f n0 seq=1300 len=100
check dups n0 2`,
	},
	{
		name: "paper/SYN retransmissions count; pure ACKs never do",
		mode: Paper, perDC: 1,
		script: `
at 0    client f n0 seq=7 flags=S
at 1000 client f n0 seq=7 flags=S
at 3000 client f n0 seq=7 flags=S
check dups n0 2
at 3001 client g n0 seq=50
at 3002 client g n0 seq=50
at 3003 client g n0 seq=50
check dups n0 2`,
	},
	{
		name: "paper/fast signals are ignored in paper mode",
		mode: Paper, perDC: 1,
		script: `
at 0     client f n0 seq=1000 len=100
at 1     probe n0 fail
at 2     probe n0 fail
at 3     probe n0 fail
at 4     probe n0 fail
at 5     probe n0 fail
at 6     lag f n0 since=0
at 20000 tick
at 20001 client f n0 seq=1100 len=100
at 20002 tick
check up n0`,
	},
	{
		name: "paper/the backup DC takes over, then the last DC can go too",
		mode: Paper, perDC: 1,
		script: `
at 0 client a n0 seq=0 len=1
at 1 client a n0 seq=0 len=1
at 2 client a n0 seq=0 len=1
at 3 client a n0 seq=0 len=1
at 4 client a n0 seq=0 len=1
at 5 client a n0 seq=0 len=1 -> NodeDown n0 duplicates, DCDown sydney nodes
check preferred dublin
# duplicates to a node already down are not counted again
at 6 client a n0 seq=0 len=1
check dups n0 0
at 10 client b n1 seq=0 len=1
at 11 client b n1 seq=0 len=1
at 12 client b n1 seq=0 len=1
at 13 client b n1 seq=0 len=1
at 14 client b n1 seq=0 len=1
at 15 client b n1 seq=0 len=1 -> NodeDown n1 duplicates, DCDown dublin nodes
check preferred none`,
	},
	{
		name:  "fast/Algorithm 1 runs in fast mode too, even while probes pass (data path broken)",
		perDC: 1,
		script: `
at 0   probe n0 ok rtt=10
at 0   client f n0 seq=1000 len=100
at 210 client f n0 seq=1000 len=100
at 300 probe n0 ok rtt=10
at 400 client g n0 seq=1 len=10
at 420 client f n0 seq=1000 len=100
at 500 probe n0 ok rtt=10
at 600 client g n0 seq=1 len=10
at 630 client f n0 seq=1000 len=100
at 700 probe n0 ok rtt=10
check up n0
at 800 client g n0 seq=1 len=10 -> NodeDown n0 duplicates, DCDown sydney nodes`,
	},
	{
		name:  "fast/Algorithm 1 in fast mode waits until the server has been quiet for the silence threshold",
		perDC: 1,
		script: `
at 0   probe n0 ok rtt=10
at 0   server x n0 ack=1
at 0   client f n0 seq=1000 len=100
at 10  client f n0 seq=1000 len=100
at 20  client f n0 seq=1000 len=100
at 30  client f n0 seq=1000 len=100
at 40  client f n0 seq=1000 len=100
at 50  client f n0 seq=1000 len=100
check dups n0 5
at 849 tick
check up n0
at 850 tick -> NodeDown n0 duplicates, DCDown sydney nodes
# the same after a probe reply: the data path must stay quiet twice as long
at 851  probe n1 ok rtt=10
at 860  server y n1 ack=1
at 870  probe n1 ok rtt=10
at 871  client g n1 seq=1000 len=100
at 872  client g n1 seq=1000 len=100
at 873  client g n1 seq=1000 len=100
at 874  client g n1 seq=1000 len=100
at 875  client g n1 seq=1000 len=100
at 876  client g n1 seq=1000 len=100
at 1710 probe n1 ok rtt=10
check up n1
at 2559 tick
check up n1
check dups n1 5
at 2560 tick -> NodeDown n1 duplicates, DCDown dublin nodes`,
	},
	{
		name:  "fast/silence with unacknowledged data (threshold from the RTT estimate)",
		perDC: 1,
		script: `
# one probe sample: srtt 10 ms, rto 210 ms: silence threshold max(500, 10+4*210) = 850 ms
at 0    probe n0 ok rtt=10
at 0    client f n0 seq=1000 len=100
at 210  client f n0 seq=1000 len=100
at 630  client f n0 seq=1000 len=100
at 849  tick
check up n0
at 850  tick -> NodeDown n0 silence, DCDown sydney nodes`,
	},
	{
		name:  "fast/two losses in a row (retransmission-sized silence) do not trip silence",
		perDC: 1,
		script: `
at 0    probe n0 ok rtt=10
at 0    client f n0 seq=1000 len=100
at 210  client f n0 seq=1000 len=100
at 630  client f n0 seq=1000 len=100
at 640  server f n0 ack=1100
check up n0
# now a real outage: retransmissions at +rto and +3rto, silent for 850 ms
at 640  client f n0 seq=1100 len=100
at 850  client f n0 seq=1100 len=100
at 1270 client f n0 seq=1100 len=100
at 1489 tick
check up n0
at 1490 tick -> NodeDown n0 silence, DCDown sydney nodes`,
	},
	{
		name:  "fast/silence is measured from the last thing heard (probe or packet)",
		perDC: 1,
		script: `
at 0    probe n0 ok rtt=10
at 0    client f n0 seq=1000 len=100
at 210  client f n0 seq=1000 len=100
at 600  probe n0 ok rtt=10
at 630  client f n0 seq=1000 len=100
at 1449 tick
check up n0
# the client went quiet for more than half the threshold: wait for its next retransmission
at 1450 tick
check up n0
at 1470 client f n0 seq=1000 len=100 -> NodeDown n0 silence, DCDown sydney nodes`,
	},
	{
		name:  "fast/no silence without unacknowledged data or without an active client",
		perDC: 1,
		script: `
at 0     probe n0 ok rtt=10
at 0     client f n0 seq=1000 len=100
at 5     server f n0 ack=1100
at 5000  tick
# data outstanding but the client went quiet at once (no retransmission):
# a stale flow, not a failure
at 5001  client g n0 seq=1 len=10
at 9000  tick
check up n0
# a stale flow does not make a new flow look silent
at 9500  client k n0 seq=1 len=10
at 9600  tick
at 10400 tick
check up n0
at 11000 end g
at 11001 end k
at 20000 tick
check up n0`,
	},
	{
		name:  "fast/ack lag of a branch against the others",
		perDC: 1,
		script: `
at 0    probe n1 ok rtt=10
at 0    client b n1 seq=1000 len=100
# threshold max(500, 10+2*210) = 500 ms from the later of lag start and last heard
at 100  lag b n1 since=100
at 599  tick
check up n1
at 600  tick -> NodeDown n1 ack_lag, DCDown dublin nodes`,
	},
	{
		name:  "fast/ack lag of a node that is still heard from is not a failure; cleared lag neither",
		perDC: 1,
		script: `
at 0    probe n1 ok rtt=10
at 0    client b n1 seq=1000 len=100
at 100  lag b n1 since=100
at 400  probe n1 ok rtt=10
at 800  tick
check up n1
at 850  lag b n1 since=none
at 5000 tick
check up n1
at 5001 lag b n1 since=5001
at 5002 end b
at 9000 tick
check up n1`,
	},
	{
		name:  "fast/probe misses count and any ready probe resets them",
		perDC: 2,
		script: `
at 0   probe n0 fail
at 100 probe n0 fail
at 200 probe n0 fail
check misses n0 3
at 300 probe n0 ok
check misses n0 0
at 400 probe n0 fail
at 500 probe n0 notready
at 600 probe n0 fail
check up n0
at 700 probe n0 fail -> NodeDown n0 probes
check live sydney 1
check dcup sydney
check preferred sydney`,
	},
	{
		name:  "fast/a node that keeps saying not ready is taken out",
		perDC: 2,
		script: `
at 0   probe n1 notready
at 100 probe n1 notready
at 200 probe n1 notready
at 300 probe n1 notready -> NodeDown n1 probes`,
	},
	{
		name:  "fast/a DC is down when all its nodes are down; preferred moves to the next",
		perDC: 2,
		script: `
at 0   probe n0 fail
at 100 probe n0 fail
at 200 probe n0 fail
at 300 probe n0 fail -> NodeDown n0 probes
check preferred sydney
at 400 probe n1 fail
at 500 probe n1 fail
at 600 probe n1 fail
at 700 probe n1 fail -> NodeDown n1 probes, DCDown sydney nodes
check dcdown sydney
check dcup dublin
check preferred dublin
check live dublin 2`,
	},
	{
		name:  "fast/correlated misses across every live node of a DC take the DC down early",
		perDC: 3,
		script: `
at 0   probe n0 fail
at 10  probe n1 fail
at 20  probe n2 fail
at 100 probe n0 fail
at 110 probe n1 fail
check up n0
at 120 probe n2 fail -> NodeDown n0 dc_probes, NodeDown n1 dc_probes, NodeDown n2 dc_probes, DCDown sydney nodes
check preferred dublin`,
	},
	{
		name:  "fast/one healthy node keeps the correlated rule off",
		perDC: 3,
		script: `
at 0   probe n0 fail
at 10  probe n1 fail
at 20  probe n2 ok
at 100 probe n0 fail
at 110 probe n1 fail
at 120 probe n2 ok
at 200 probe n0 fail
at 210 probe n1 fail
check up n0
check up n1`,
	},
	{
		name:  "hysteresis/readmission only after ReadmitAfter of continuous ready probes",
		perDC: 1,
		script: `
at 0    probe n0 fail
at 100  probe n0 fail
at 200  probe n0 fail
at 300  probe n0 fail -> NodeDown n0 probes, DCDown sydney nodes
at 400  probe n0 ok
at 1000 probe n0 ok
# a single miss restarts the clock
at 1100 probe n0 fail
at 1200 probe n0 ok
at 2500 probe n0 notready
at 2600 probe n0 ok
at 3000 tick
at 4599 probe n0 ok
check down n0
check preferred dublin
at 4600 tick -> NodeUp n0 ready, DCUp sydney nodes
check preferred sydney
check misses n0 0`,
	},
	{
		name: "hysteresis/a node that recovers in paper mode also needs ready probes",
		mode: Paper, perDC: 1,
		script: `
at 0    client f n0 seq=1 len=1
at 1    client f n0 seq=1 len=1
at 2    client f n0 seq=1 len=1
at 3    client f n0 seq=1 len=1
at 4    client f n0 seq=1 len=1
at 5    client f n0 seq=1 len=1 -> NodeDown n0 duplicates, DCDown sydney nodes
at 100  server f n0 ack=2
at 5000 tick
check down n0
at 5100 probe n0 ok
at 7099 probe n0 ok
at 7100 probe n0 ok -> NodeUp n0 ready, DCUp sydney nodes`,
	},
	{
		name: "safe/one client's SYN burst and retransmissions never take a node down", mode: Safe, perDC: 1,
		script: `
at 0    probe n0 ok rtt=10
at 0    client s n0 seq=1 flags=S cli=10.9.0.1
at 1    client s n0 seq=1 flags=S cli=10.9.0.1
at 2    client s n0 seq=1 flags=S cli=10.9.0.1
at 3    client s n0 seq=1 flags=S cli=10.9.0.1
at 4    client s n0 seq=1 flags=S cli=10.9.0.1
at 5    client s n0 seq=1 flags=S cli=10.9.0.1
check dups n0 0
at 10   client f n0 seq=100 len=10 cli=10.9.0.1
at 11   client g n0 seq=100 len=10 cli=10.9.0.1
at 20   client f n0 seq=100 len=10 cli=10.9.0.1
at 21   client g n0 seq=100 len=10 cli=10.9.0.1
at 30   client f n0 seq=100 len=10 cli=10.9.0.1
at 31   client g n0 seq=100 len=10 cli=10.9.0.1
at 2000 probe n0 fail
at 2001 client f n0 seq=100 len=10 cli=10.9.0.1
at 2002 client g n0 seq=100 len=10 cli=10.9.0.1
at 2100 tick
check up n0`,
	},
	{
		name: "safe/duplicates from two clients on two flows, the node silent and its probe failing: down", mode: Safe, perDC: 1,
		script: `
at 0    probe n0 ok rtt=10
at 0    server x n0 ack=1
at 10   client f n0 seq=100 len=10 cli=10.9.0.1
at 11   client g n0 seq=100 len=10 cli=10.9.0.2
at 300  client f n0 seq=100 len=10 cli=10.9.0.1
at 301  client g n0 seq=100 len=10 cli=10.9.0.2
at 600  client f n0 seq=100 len=10 cli=10.9.0.1
at 601  client g n0 seq=100 len=10 cli=10.9.0.2
at 900  client f n0 seq=100 len=10 cli=10.9.0.1
# Corroborated and quiet for the silence threshold, but the probes pass.
at 901  client g n0 seq=100 len=10 cli=10.9.0.2
at 950  probe n0 ok rtt=10
at 1000 tick
check up n0
at 1100 probe n0 fail -> NodeDown n0 duplicates, DCDown sydney nodes`,
	},
	{
		name: "safe/any packet from the node resets the evidence", mode: Safe, perDC: 1,
		script: `
at 0    client f n0 seq=100 len=10 cli=10.9.0.1
at 10   client g n0 seq=100 len=10 cli=10.9.0.2
at 300  client f n0 seq=100 len=10 cli=10.9.0.1
at 301  client g n0 seq=100 len=10 cli=10.9.0.2
at 600  client f n0 seq=100 len=10 cli=10.9.0.1
at 601  client g n0 seq=100 len=10 cli=10.9.0.2
at 602  server h n0 ack=7
at 900  client f n0 seq=100 len=10 cli=10.9.0.1
at 901  client g n0 seq=100 len=10 cli=10.9.0.2
at 2000 tick
check up n0
check dups n0 2`,
	},
	{
		name: "safe/passive evidence never takes down the last live DC; failed probes do", mode: Safe, perDC: 1,
		script: `
at 0    probe n1 fail
at 100  probe n1 fail
at 200  probe n1 fail
at 300  probe n1 fail -> NodeDown n1 probes, DCDown dublin nodes
at 0    client f n0 seq=100 len=10 cli=10.9.0.1
at 10   client g n0 seq=100 len=10 cli=10.9.0.2
at 300  client f n0 seq=100 len=10 cli=10.9.0.1
at 301  client g n0 seq=100 len=10 cli=10.9.0.2
at 600  client f n0 seq=100 len=10 cli=10.9.0.1
at 601  client g n0 seq=100 len=10 cli=10.9.0.2
at 1500 probe n0 fail
at 1600 tick
check up n0
at 1700 probe n0 fail
at 1800 probe n0 fail
at 1900 probe n0 fail -> NodeDown n0 probes, DCDown sydney nodes`,
	},
	{
		name: "safe/passive decisions are rate-limited", mode: Safe, perDC: 2,
		script: `
at 0    probe n0 fail
at 0    probe n1 fail
at 0    client f n0 seq=100 len=10 cli=10.9.0.1
at 0    client g n0 seq=100 len=10 cli=10.9.0.2
at 0    client h n1 seq=100 len=10 cli=10.9.0.1
at 0    client i n1 seq=100 len=10 cli=10.9.0.2
at 10   client f n0 seq=100 len=10 cli=10.9.0.1
at 10   client g n0 seq=100 len=10 cli=10.9.0.2
at 10   client h n1 seq=100 len=10 cli=10.9.0.1
at 10   client i n1 seq=100 len=10 cli=10.9.0.2
at 20   client f n0 seq=100 len=10 cli=10.9.0.1
at 20   client g n0 seq=100 len=10 cli=10.9.0.2
at 20   client h n1 seq=100 len=10 cli=10.9.0.1
at 20   client i n1 seq=100 len=10 cli=10.9.0.2
at 30   client f n0 seq=100 len=10 cli=10.9.0.1
at 30   client h n1 seq=100 len=10 cli=10.9.0.1
# Silence threshold 1.3 s (no RTT sample): both nodes qualify at 1.31 s.
at 1400 tick -> NodeDown n0 duplicates
at 2000 tick
check up n1
at 2400 tick -> NodeDown n1 duplicates, DCDown sydney nodes`,
	},
	{
		name: "safe/failed probes alone take a node down, a DC's nodes together", mode: Safe, perDC: 2,
		script: `
at 0    probe n2 fail
at 100  probe n2 fail
at 200  probe n2 fail
at 300  probe n2 fail -> NodeDown n2 probes
at 0    probe n0 fail
at 0    probe n1 fail
at 100  probe n0 fail
at 100  probe n1 fail -> NodeDown n0 dc_probes, NodeDown n1 dc_probes, DCDown sydney nodes`,
	},
	{
		name:  "StartDown admits nodes like recovered ones",
		perDC: 1,
		cfg:   func(c *Config) { c.StartDown = true },
		script: `
check preferred none
check dcdown sydney
at 0    probe n1 ok
at 2000 probe n1 ok -> NodeUp n1 ready, DCUp dublin nodes
check preferred dublin`,
	},
}

func TestRules(t *testing.T) {
	for _, tc := range ruleCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Mode = tc.mode
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			d, err := New[string](cfg, testTopo(tc.perDC))
			if err != nil {
				t.Fatal(err)
			}
			runScript(t, d, tc.script)
			checkInvariants(t, d)
		})
	}
}

// checkInvariants: a DC is up iff it has a live node; the DC's live count
// matches its nodes; the transitions alternate per node and per DC.
func checkInvariants[K comparable](t testing.TB, d *Detector[K]) {
	t.Helper()
	for dc := DCID(0); int(dc) < d.NumDCs(); dc++ {
		live := d.LiveNodes(dc, nil)
		s, _ := d.DCState(dc)
		if s.Up != (len(live) > 0) || s.Live != len(live) || d.DCUp(dc) != s.Up {
			t.Fatalf("DC %s: up=%v live=%d but live nodes %v", s.Name, s.Up, s.Live, live)
		}
	}
	if d.cfg.History == 0 {
		return
	}
	last := map[[2]int]Kind{}
	for _, tr := range d.Transitions() {
		key := [2]int{int(tr.Node), int(tr.DC)}
		if tr.Kind == DCDown || tr.Kind == DCUp {
			key[0] = -1
		}
		if prev, ok := last[key]; ok && prev == tr.Kind {
			t.Fatalf("transition %v twice in a row for %v: %+v", tr.Kind, key, d.Transitions())
		}
		last[key] = tr.Kind
	}
}

// TestPaperRecoveryTime reproduces the paper's claim: with the threshold
// at 5 and TCP's exponential RTO backoff, the redirection happens 15-25 s
// after the cut (section 4.1). With an initial RTO r, the 5th
// retransmission leaves at r*(1+2+4+8+16) = 31r: r = 0.5-0.8 s (an RTT
// near 100 ms with the variance of a full pipe) gives 15.5-24.8 s.
func TestPaperRecoveryTime(t *testing.T) {
	for _, rto := range []time.Duration{500 * time.Millisecond, 650 * time.Millisecond, 800 * time.Millisecond} {
		d, err := New[int](Config{Mode: Paper}, testTopo(1))
		if err != nil {
			t.Fatal(err)
		}
		seg := Segment{Seq: 1000, Len: 1448}
		d.ClientSegment(t0, 1, 0, seg) // sent just before the cut
		at, r := t0, rto
		var detected time.Duration
		for i := 0; i < 10 && detected == 0; i++ {
			at = at.Add(r)
			r *= 2
			for _, dec := range d.ClientSegment(at, 1, 0, seg) {
				if dec.Kind == NodeDown {
					detected = at.Sub(t0)
				}
			}
		}
		if detected < 15*time.Second || detected > 25*time.Second {
			t.Errorf("RTO %v: detected after %v, the paper reports 15-25 s", rto, detected)
		}
		if want := 31 * rto; detected != want {
			t.Errorf("RTO %v: detected after %v, want 31*RTO = %v", rto, detected, want)
		}
	}
}
