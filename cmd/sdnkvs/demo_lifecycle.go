//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/demo"
)

// DemoLifecycleFlags are the flags of `sdnkvs demo --scenario lifecycle`.
type DemoLifecycleFlags struct {
	Cycles        int           `name:"cycles" default:"2" help:"Lifecycle: disasters, alternating near, far, near... (2: cut near, heal, rejoin, cut far)."`
	Outage        time.Duration `name:"outage" default:"6s" help:"Lifecycle: how long a cut DC stays cut before it is healed."`
	Steady        time.Duration `name:"steady" default:"3s" help:"Lifecycle: after a rejoin the next cut comes at a random time in [steady, 2*steady)."`
	RejoinTimeout time.Duration `name:"rejoin-timeout" default:"2m" help:"Lifecycle: how long a healed DC may take to be live again before the run fails."`
	Rejoin        string        `name:"rejoin" default:"" enum:",catchup,manual,trust" help:"Lifecycle: the middlebox's --rejoin (default: its own, catchup with sequenced stores); trust is the baseline that readmits a healed DC on reachability alone."`
	Seed          uint64        `name:"seed" default:"0" help:"Lifecycle: seed of the random cut times (0: random; the report prints it)."`
}

// config converts the flags (only meaningful for the lifecycle scenario).
func (f DemoLifecycleFlags) config(scenario string) (demo.LifecycleConfig, error) {
	if scenario != demo.ScenarioLifecycle {
		return demo.LifecycleConfig{}, nil
	}
	if f.Cycles < 1 {
		return demo.LifecycleConfig{}, fmt.Errorf("--cycles %d: want at least 1", f.Cycles)
	}
	if f.Outage <= 0 || f.Steady <= 0 || f.RejoinTimeout <= 0 {
		return demo.LifecycleConfig{}, errors.New("--outage, --steady, --rejoin-timeout: want positive durations")
	}
	return demo.LifecycleConfig{Cycles: f.Cycles, Outage: f.Outage, Steady: f.Steady, RejoinTimeout: f.RejoinTimeout,
		Rejoin: f.Rejoin, Seed: f.Seed}, nil
}

// runLifecycleDemo runs the lifecycle scenario and prints its report
// (JSON on out with asJSON, progress on cfg.Log).
func runLifecycleDemo(ctx context.Context, cfg demo.Config, out io.Writer, asJSON bool) error {
	res, err := demo.RunLifecycle(ctx, cfg)
	if err != nil {
		if res != nil {
			res.Print(cfg.Log)
		}
		return err
	}
	if asJSON {
		if err := json.NewEncoder(out).Encode(res); err != nil {
			return err
		}
	} else {
		res.Print(out)
	}
	if res.RPOLost > 0 {
		return fmt.Errorf("demo: a survivor lacked %d acknowledged writes", res.RPOLost)
	}
	return nil
}
