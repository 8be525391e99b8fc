package failover

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/script"
)

// The lifecycle's rule scripts (testdata/lifecycle/*.txt, -rewrite
// regenerates the output). Times are milliseconds since the Unix epoch,
// so a sequencer position G prints as milliseconds too.
//
//	lifecycle [mode=catchup|manual|trust] [dcs=2|3] [margin=<dur>] [reset=<dur>] [verify=<dur>]
//	at <ms> down <dc> [low=<ms>] | up <dc> | missed <dc> cause=<c> [low=<ms>]
//	at <ms> lacking <dc> n=<n> | lost <dc> [job=<n>] | admit <dc> | tick
//	at <ms> progress <dc> [job=<n>] state=running|done|failed [keys=<n>] [bytes=<n>] [rem=<n>] g=<ms>
//	status <dc> | restart <ms>   (export, JSON round trip, import into a fresh Lifecycle)
//
// A verify pass prints "verify bound=<ms>" after its catchup event and in
// status; status prints "needs_verify" and "verify_passes=<n>" when set.

func lms(n int) time.Time { return time.Unix(0, 0).Add(time.Duration(n) * time.Millisecond) }

func gms(g uint64) string { return fmt.Sprintf("%dms", g/uint64(time.Millisecond)) }

func renderLife(l *Lifecycle, evs []LifeEvent) []string {
	var out []string
	for _, e := range evs {
		name := l.dcs[e.DC].name
		switch e.Kind {
		case EvTransition:
			out = append(out, fmt.Sprintf("%s %s->%s %s", name, e.From, e.To, e.Cause))
		case EvCatchup:
			line := fmt.Sprintf("%s catchup job=%d source=%s from=%s", name, e.Job, l.dcs[e.Source].name, gms(e.Cursor.G))
			if e.Verify {
				line += " verify bound=" + gms(e.Bound)
			}
			out = append(out, line)
		case EvStop:
			out = append(out, fmt.Sprintf("%s stop job=%d", name, e.Job))
		case EvResetLacking:
			out = append(out, fmt.Sprintf("%s reset-lacking", name))
		}
	}
	return out
}

func TestLifecycleRules(t *testing.T) {
	script.RunDir(t, "testdata/lifecycle/*.txt", func() func(*script.Cmd) []string {
		var l *Lifecycle
		var cfg LifecycleConfig
		var topo []DC
		dcOf := func(c *script.Cmd, name string) DCID {
			for i := range l.dcs {
				if l.dcs[i].name == name {
					return DCID(i)
				}
			}
			c.Fatalf("unknown DC %q", name)
			return -1
		}
		return func(c *script.Cmd) []string {
			switch c.Name {
			case "lifecycle":
				mode, err := ParseRejoinMode(map[bool]string{true: "catchup", false: c.Args["mode"]}[c.Args["mode"] == ""])
				if err != nil {
					c.Fatalf("%v", err)
				}
				cfg = LifecycleConfig{Mode: mode, Margin: c.Duration("margin", 0), ResetAfter: c.Duration("reset", 0), VerifyEvery: c.Duration("verify", 0)}
				topo = testTopoN(1, c.Int("dcs", 2))
				l, err = NewLifecycle(cfg, topo, lms(0))
				if err != nil {
					c.Fatalf("%v", err)
				}
				return nil
			case "status":
				s, _ := l.Status(dcOf(c, c.Pos[0]))
				line := fmt.Sprintf("%s %s since=%dms cause=%s in_sync=%v lacking=%d passes=%d", s.Name, s.State, s.Since.UnixMilli(), s.Cause, s.InSync, s.FlowsLacking, s.Passes)
				if s.VerifyPasses > 0 {
					line += fmt.Sprintf(" verify_passes=%d", s.VerifyPasses)
				}
				if s.NeedsVerify {
					line += " needs_verify"
				}
				if !s.InSync {
					line += " cursor=" + gms(s.Cursor.G)
				}
				if j := s.Job; j != nil {
					line += fmt.Sprintf(" job=%d source=%s clean=%v keys=%d bytes=%d", j.Job, j.Source, j.Clean, j.Keys, j.Bytes)
					if j.Verify {
						line += " verify bound=" + gms(j.Bound)
					}
				}
				return []string{line}
			case "restart":
				b, err := l.MarshalState()
				if err != nil {
					c.Fatalf("%v", err)
				}
				st, err := ParseLifecycleState(b)
				if err != nil {
					c.Fatalf("%v", err)
				}
				now := lms(atoiT(c, c.Pos[0]))
				l, _ = NewLifecycle(cfg, topo, now)
				return renderLife(l, l.Import(now, st))
			case "at":
				return renderLife(l, lifeStep(c, l, dcOf))
			}
			c.Fatalf("unknown command")
			return nil
		}
	})
}

func atoiT(c *script.Cmd, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		c.Fatalf("%v", err)
	}
	return n
}

func lifeStep(c *script.Cmd, l *Lifecycle, dcOf func(*script.Cmd, string) DCID) []LifeEvent {
	if len(c.Pos) < 2 {
		c.Fatalf("want at <ms> <event>")
	}
	now := lms(atoiT(c, c.Pos[0]))
	var dc DCID
	if len(c.Pos) > 2 {
		dc = dcOf(c, c.Pos[2])
	}
	low := ^uint64(0)
	if _, ok := c.Arg("low"); ok {
		low = uint64(c.Int("low", 0)) * uint64(time.Millisecond)
	}
	job := func() uint64 {
		if _, ok := c.Arg("job"); ok {
			return uint64(c.Int("job", 0))
		}
		j, _ := l.JobOf(dc)
		return j.ID
	}
	switch c.Pos[1] {
	case "down":
		return l.DCDown(now, dc, low)
	case "up":
		return l.DCUp(now, dc)
	case "missed":
		var cause LifeCause
		if err := cause.UnmarshalText([]byte(c.Args["cause"])); err != nil {
			c.Fatalf("%v", err)
		}
		return l.Missed(now, dc, cause, low)
	case "lacking":
		return l.SetLacking(now, dc, c.Int("n", 0))
	case "lost":
		return l.JobLost(now, dc, job())
	case "admit":
		evs, err := l.Admit(now, dc)
		if err != nil {
			c.Fatalf("admit: %v", err)
		}
		return evs
	case "tick":
		return l.Tick(now)
	case "progress":
		st := map[string]JobState{"running": JobRunning, "done": JobDone, "failed": JobFailed}[c.Args["state"]]
		p := Progress{Job: job(), State: st, Keys: uint64(c.Int("keys", 0)), Bytes: uint64(c.Int("bytes", 0)), Remaining: ^uint64(0),
			Cursor: Tag{G: uint64(c.Int("g", 0)) * uint64(time.Millisecond)}}
		if _, ok := c.Arg("rem"); ok {
			p.Remaining = uint64(c.Int("rem", 0))
		}
		return l.Progress(now, dc, p)
	}
	c.Fatalf("unknown event %q", c.Pos[1])
	return nil
}

func TestLifecycleAdmitOutsideManual(t *testing.T) {
	for _, mode := range []RejoinMode{RejoinCatchup, RejoinTrust} {
		l, _ := NewLifecycle(LifecycleConfig{Mode: mode}, testTopoN(1, 2), lms(0))
		l.Missed(lms(20000), 1, LifeLagged, ^uint64(0))
		if _, err := l.Admit(lms(20001), 1); err == nil || !strings.Contains(err.Error(), mode.String()) {
			t.Errorf("%v: Admit: %v, want an error naming the mode", mode, err)
		}
	}
	l, _ := NewLifecycle(LifecycleConfig{Mode: RejoinManual}, testTopoN(1, 2), lms(0))
	l.DCDown(lms(20000), 1, ^uint64(0))
	if _, err := l.Admit(lms(20001), 1); err == nil {
		t.Errorf("manual: admitting a down DC worked")
	}
	l.DCUp(lms(20002), 1)
	if l.State(1) != DCStateJoining {
		t.Fatalf("manual: healed DC is %v, want joining", l.State(1))
	}
	if _, err := l.Admit(lms(20003), 1); err != nil || l.State(1) != DCStateLive {
		t.Errorf("manual: Admit: %v, state %v", err, l.State(1))
	}
}

// A state file written before verify passes (no needs_verify) loads, with
// needs_verify false; a file with it restores it; a lost state makes every
// DC need a verify pass.
func TestLifecycleStateNeedsVerify(t *testing.T) {
	old := `{"version": 1, "next_job": 7, "dcs": [
  {"name": "sydney", "state": "live", "since": "1970-01-01T00:01:40Z", "cause": "start", "in_sync": true, "cursor": {"g": 0, "w": 0}},
  {"name": "dublin", "state": "joining", "since": "1970-01-01T00:01:40Z", "cause": "divergence", "in_sync": false, "cursor": {"g": 90000000000, "w": 0}}]}`
	for _, tc := range []struct {
		file string
		want bool
	}{{old, false}, {strings.Replace(old, `"in_sync": false,`, `"in_sync": false, "needs_verify": true,`, 1), true}} {
		st, err := ParseLifecycleState([]byte(tc.file))
		if err != nil {
			t.Fatal(err)
		}
		l, _ := NewLifecycle(LifecycleConfig{}, testTopoN(1, 2), lms(200000))
		evs := l.Import(lms(200000), st)
		s, _ := l.Status(1)
		if s.State != DCStateJoining || s.NeedsVerify != tc.want || s.Job == nil || s.Job.Verify != tc.want {
			t.Errorf("needs_verify %v in the file: dublin %+v (job %+v), events %v", tc.want, s, s.Job, renderLife(l, evs))
		}
		if b, _ := l.MarshalState(); strings.Contains(string(b), "needs_verify") != tc.want {
			t.Errorf("needs_verify %v: exported %s", tc.want, b)
		}
	}
	l, _ := NewLifecycle(LifecycleConfig{}, testTopoN(1, 2), lms(200000))
	l.ImportLost(lms(200000))
	if _, err := l.Admit(lms(200001), 0); err != nil {
		t.Fatal(err)
	}
	s0, _ := l.Status(0)
	s1, _ := l.Status(1)
	if s0.NeedsVerify || !s1.NeedsVerify || s1.Job == nil || !s1.Job.Verify {
		t.Fatalf("lost state, sydney admitted: sydney %+v, dublin %+v (job %+v)", s0, s1, s1.Job)
	}
}
