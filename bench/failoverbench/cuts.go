//go:build linux

package failoverbench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
)

// runCuts cuts the near DC cfg.Cuts times at random moments under forked
// write load and checks every acknowledged write against the far DC.
func runCuts(ctx context.Context, env *scenario.Env, cfg Config, res *Result) error {
	// Unsequenced stores: the near DC serves again once it is reachable
	// (--rejoin trust; the default without --sequenced, manual, would keep
	// it joining until an operator admits it). A later --rejoin in
	// cfg.MiddleboxArgs wins.
	extra := append([]string{"--rejoin", "trust"}, cfg.MiddleboxArgs...)
	if err := env.StartMiddlebox(ctx, scenario.MB{Detector: "fast", Extra: extra}); err != nil {
		return err
	}
	defer env.StopMiddlebox()
	rng := rand.New(rand.NewPCG(cfg.Seed, 1))
	w, err := scenario.NewWorkload(scenario.WorkloadConfig{
		Writers: cfg.CutsWriters, Window: 64, Rate: cfg.CutsRate, ValueSize: 32,
		KeyPrefix: "cuts:" + env.TB.Name() + ":", DCs: []string{cfg.Near(), cfg.Far()},
		DialWrite:  func(ctx context.Context) (net.Conn, error) { return env.DialClient(ctx, scenario.WritePort) },
		MaxSeconds: 3600,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.Log, "repeated cuts: %d cuts of %s under %.0f writes/s (detector fast), seed %d\n", cfg.Cuts, cfg.Near(), cfg.CutsRate, cfg.Seed)
	w.Start(ctx)
	defer w.Stop()
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	waitFor := func(limit time.Duration, cond func() bool) bool {
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if cond() {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return cond()
	}
	for i := 1; i <= cfg.Cuts; i++ {
		// A random moment 0.5-2.5 s into a steady stream of writes.
		if err := sleep(500*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Second)))); err != nil {
			return err
		}
		resetsBefore := w.Totals().WriteResets
		if err := env.TB.Cut(cfg.Near()); err != nil {
			return err
		}
		at := w.MarkCut()
		cr := CutRun{N: i, At: at, RTOWrite: -1, Readmitted: -1}
		if waitFor(30*time.Second, func() bool { wr, _ := w.RecoveredAfterCut(); return wr > 0 }) {
			cr.RTOWrite, _ = w.RecoveredAfterCut()
		}
		if err := sleep(300 * time.Millisecond); err != nil {
			return err
		}
		if err := env.TB.Heal(cfg.Near()); err != nil {
			return err
		}
		healed := time.Now()
		if waitFor(30*time.Second, func() bool { live, err := env.DCLive(cfg.Near()); return err == nil && live }) {
			cr.Readmitted = time.Since(healed)
		}
		cr.WriteResets = w.Totals().WriteResets - resetsBefore
		if trans, err := env.Transitions(); err == nil {
			cutWall := w.StartTime().Add(at)
			for _, t := range trans {
				if !t.At.Before(cutWall.Add(-time.Second)) {
					cr.Transitions = append(cr.Transitions, fmt.Sprintf("%+.2fs %s %s %s (%s): %s", t.At.Sub(cutWall).Seconds(), t.DC, t.Kind, t.Node, t.Signal, t.Cause))
				}
			}
		}
		res.Cuts = append(res.Cuts, cr)
		fmt.Fprintf(cfg.Log, "  cut %d at %.1fs: writes resumed after %s, %s readmitted after %s, %d write resets\n",
			i, at.Seconds(), fmtDur(cr.RTOWrite), cfg.Near(), fmtDur(cr.Readmitted), cr.WriteResets)
		if cr.WriteResets > 0 || cr.RTOWrite < 0 {
			fmt.Fprintf(cfg.Log, "  middlebox decisions around cut %d:\n    %s\n", i, strings.Join(cr.Transitions, "\n    "))
		}
		// New write connections are forked to both DCs again.
		w.Reconnect()
	}
	if err := sleep(time.Second); err != nil {
		return err
	}
	w.Stop()
	ids, _ := w.Acked()
	vctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	chk, err := env.Verify(vctx, cfg.Far(), w, ids)
	if err != nil {
		return err
	}
	res.AckedWrites, res.RPOLost = len(ids), chk.Lost()
	fmt.Fprintf(cfg.Log, "repeated cuts: RPO %d lost of %d acknowledged writes (checked in %s)\n", res.RPOLost, res.AckedWrites, cfg.Far())
	return nil
}
