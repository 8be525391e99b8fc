package middlebox

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/failover"
	"github.com/sdnkvs/sdnkvs/failover/prober"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// TestStarvedProbesDoNotTakeDownServingDCs: every probe times out (a
// starved prober, as under CPU load) while a forked flow keeps getting
// replies from both DCs. The replies refute the probe misses: neither DC
// is declared down and the flow keeps both branches. Once the flow goes
// quiet, the same failing probes take nodes down again, so the probes
// were not simply ignored.
func TestStarvedProbesDoNotTakeDownServingDCs(t *testing.T) {
	var starve atomic.Bool
	var gw gwProbes
	cfg := testConfig()
	cfg.MulticastPorts = []uint16{6379}
	cfg.Failover = &FailoverConfig{
		// Wider streaks than the defaults: a -race build on a loaded
		// machine may pause the echo loop for a few hundred ms.
		Detector: failover.Config{Mode: failover.Fast, ReadmitAfter: 300 * time.Millisecond, ProbeMisses: 8, DCProbeMisses: 4},
		Probe:    prober.HTTP,
		Prober:   prober.Config{Interval: 100 * time.Millisecond, MinTimeout: 300 * time.Millisecond, DialContext: gw.dial},
	}
	r := newRig(t, cfg, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadBytes('\n')
			if err != nil {
				return
			}
			if _, err := c.Write(line); err != nil {
				return
			}
		}
	})
	gw.attach(t, r, func(w http.ResponseWriter, req *http.Request) {
		if starve.Load() {
			<-req.Context().Done() // no answer before the probe's timeout
			return
		}
		w.Write([]byte("ready"))
	})

	c := r.dial(t, 6379)
	br := bufio.NewReader(c)
	var stop atomic.Bool
	echoErr := make(chan error, 1)
	var rounds atomic.Int64
	go func() {
		for i := 0; !stop.Load(); i++ {
			msg := fmt.Sprintf("ping %d\n", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				echoErr <- err
				return
			}
			got, err := br.ReadString('\n')
			if err != nil || got != msg {
				echoErr <- fmt.Errorf("echo %d: %q, %v", i, got, err)
				return
			}
			rounds.Add(1)
		}
		echoErr <- nil
	}()
	testenv.WaitFor(t, 5*time.Second, "the forked flow to have both branches", func() bool {
		fl := r.mb.Flows(0)
		return len(fl) == 1 && len(fl[0].Nodes) == 2 && rounds.Load() > 10
	})
	flowNodes := r.mb.Flows(0)[0].Nodes
	// flowNodeDown returns a node of the forked flow that is down, if any.
	flowNodeDown := func() (failover.NodeStatus, bool) {
		for i := range r.mb.nodes {
			st, ok := r.mb.failoverNode(i)
			if ok && !st.Up && slices.Contains(flowNodes, st.Addr.String()) {
				return st, true
			}
		}
		return failover.NodeStatus{}, false
	}

	starve.Store(true)
	// Twice the time the unrefuted rules need (first timeout 0.3 s, then
	// one miss each 0.1 s: 8 misses by about 1.1 s).
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		dcs := r.mb.DCs()
		if !dcs[0].Live || !dcs[1].Live {
			t.Fatalf("a serving DC was declared down on starved probes: %+v %+v", dcs[0], dcs[1])
		}
		if st, down := flowNodeDown(); down {
			t.Fatalf("node %s, serving the forked flow, declared down: %s", st.Addr, st.Cause)
		}
		time.Sleep(50 * time.Millisecond) // sampling the state, not waiting for it
	}
	if fl := r.mb.Flows(0); len(fl) != 1 || len(fl[0].Nodes) != 2 {
		t.Fatalf("forked flow after starved probes: %+v", fl)
	}
	r.mb.flows.Lock()
	refuted := r.mb.flows.det.Stats().ProbeStreaksRefuted
	r.mb.flows.Unlock()
	if refuted == 0 {
		t.Fatal("no probe streak counted as refuted")
	}
	rec := httptest.NewRecorder()
	r.mb.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "sdnkvs_middlebox_failover_probe_streaks_refuted_total ") {
		t.Error("/metrics lacks sdnkvs_middlebox_failover_probe_streaks_refuted_total")
	}
	stop.Store(true)
	if err := <-echoErr; err != nil {
		t.Fatalf("echo during starved probes: %v", err)
	}
	t.Logf("%d echo rounds, %d probe streaks refuted", rounds.Load(), refuted)

	// The flow is quiet now: nothing refutes the failing probes.
	testenv.WaitFor(t, 10*time.Second, "a node of the quiet flow to go down on failed probes", func() bool {
		_, down := flowNodeDown()
		return down
	})
}
