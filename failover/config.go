package failover

import (
	"fmt"
	"time"
)

// Mode selects which signals may declare a node down.
type Mode uint8

const (
	// Fast uses every signal without corroboration: the paper's duplicate
	// count (handshake SYNs excluded), server silence with unacknowledged
	// client data, branch ack lag, and active probes. Quick on a single
	// flow, but one client's retransmissions can count: not safe against
	// hostile clients.
	Fast Mode = iota
	// Paper uses the paper's Algorithm 1 alone (duplicate client segments,
	// SYNs included). Probe results are still used to readmit a node that
	// was declared down, never to declare one down. For reproducing the
	// paper only: one client sending a few identical SYNs takes a DC down.
	Paper
	// None runs no detector: a configuration uses it to turn detection
	// off (New rejects it).
	None
	// Safe (the default) declares a node down only on evidence no single
	// client can produce: failed probes (ProbeMisses in a row, or
	// DCProbeMisses on every live node of a DC), or Algorithm 1's
	// duplicates from at least MinClients distinct clients on MinFlows
	// distinct flows (handshake SYNs never count), confirmed by the node's
	// silence for the silence threshold and, when the node is probed, by
	// its latest probe failing.
	// Decisions on such passive evidence come at most once per
	// PassiveInterval. No decision of Safe or Fast mode takes down the
	// last live DC (see markDown).
	Safe
)

// String returns "safe", "fast", "paper" or "none".
func (m Mode) String() string {
	switch m {
	case Safe:
		return "safe"
	case Fast:
		return "fast"
	case Paper:
		return "paper"
	case None:
		return "none"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// MarshalText returns the mode's name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses a mode's name (so a flag or JSON field can hold a
// Mode).
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// ParseMode parses "safe", "fast", "paper" or "none".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "safe":
		return Safe, nil
	case "fast":
		return Fast, nil
	case "paper":
		return Paper, nil
	case "none":
		return None, nil
	}
	return 0, fmt.Errorf("unknown detector mode %q (want safe, fast, paper or none)", s)
}

// Config tunes the detector. The zero value of a field means "use the
// default" (see DefaultConfig); Validate rejects values that make no sense.
//
// Time thresholds that depend on the network scale with each node's RTT
// estimate (from probe RTTs): with rto = srtt + max(4*rttvar, MinRTO), the
// silence rule waits max(SilenceTimeout, srtt + 4*rto) and the ack-lag rule
// max(AckLagTimeout, srtt + 2*rto). So a single lost segment (answered
// after one RTO) never trips them, nor, for silence, two losses in a row.
type Config struct {
	// Mode selects the signals. DefaultConfig uses Safe; the zero value
	// is Fast.
	Mode Mode

	// Threshold is the paper's count of duplicate client segments, with no
	// packet from the server in between, that declares the server down.
	// Paper: 5.
	Threshold int

	// SilenceTimeout is the floor of the silence rule: a node that has sent
	// nothing (and answered no probe) for this long while a client has
	// unacknowledged data to it is down. Fast mode only.
	SilenceTimeout time.Duration

	// AckLagTimeout is the floor of the ack-lag rule: a node whose branch of
	// a forked flow has lagged the others' acknowledgement for this long,
	// and that has not been heard from since the lag began, is down. Fast
	// mode only.
	AckLagTimeout time.Duration

	// ProbeMisses is the number of consecutive failed (or not-ready) probes
	// that declares a single node down. Fast mode only.
	ProbeMisses int

	// DCProbeMisses is the correlated rule: when every live node of a DC
	// with at least two live nodes has missed this many consecutive probes,
	// all of them are declared down at once. Independent loss almost never
	// hits every node together; a cut DC always does. Fast mode only.
	// Must not exceed ProbeMisses.
	DCProbeMisses int

	// ReadmitAfter is the hysteresis: a down node comes back only after
	// every probe for this long has succeeded and reported ready.
	ReadmitAfter time.Duration

	// MinRTO is the minimum retransmission timeout assumed of TCP stacks
	// (Linux: 200 ms). It scales the silence and ack-lag rules.
	MinRTO time.Duration

	// InitialRTT is the RTT assumed of a node before its first probe RTT.
	InitialRTT time.Duration

	// MinClients and MinFlows are Safe mode's corroboration: duplicates
	// count as evidence against a node only once they come from this many
	// distinct client addresses (at most 4) and flows.
	MinClients int
	MinFlows   int

	// PassiveInterval is Safe mode's rate limit: at most one node is
	// declared down on passive evidence per interval.
	PassiveInterval time.Duration

	// MaxFlows bounds the number of flows tracked; a new flow beyond it
	// evicts the least recently active idle or half-open flow (else the
	// least recently active flow), counted in Stats.FlowsEvicted.
	MaxFlows int

	// FlowIdle forgets a flow with no segment for this long (a flow whose
	// end the caller never reported).
	FlowIdle time.Duration

	// History is the number of transitions kept for Transitions.
	History int

	// StartDown makes every node start down; it is admitted like any
	// recovered node, after ReadmitAfter of ready probes. By default every
	// node starts up.
	StartDown bool
}

// DefaultConfig returns the defaults: safe mode, threshold 5, silence
// floor 500 ms, ack-lag floor 500 ms, 4 probe misses for one node, 2 for a
// whole DC, readmission after 2 s ready, MinRTO 200 ms, InitialRTT 100 ms,
// corroboration by 2 clients on 2 flows, one passive decision per second,
// 65536 flows, flows forgotten after 5 min idle, 64 transitions kept.
func DefaultConfig() Config {
	return Config{
		Mode:            Safe,
		MinClients:      2,
		MinFlows:        2,
		PassiveInterval: time.Second,
		Threshold:       5,
		SilenceTimeout:  500 * time.Millisecond,
		AckLagTimeout:   500 * time.Millisecond,
		ProbeMisses:     4,
		DCProbeMisses:   2,
		ReadmitAfter:    2 * time.Second,
		MinRTO:          200 * time.Millisecond,
		InitialRTT:      100 * time.Millisecond,
		MaxFlows:        65536,
		FlowIdle:        5 * time.Minute,
		History:         64,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Threshold == 0 {
		c.Threshold = d.Threshold
	}
	if c.SilenceTimeout == 0 {
		c.SilenceTimeout = d.SilenceTimeout
	}
	if c.AckLagTimeout == 0 {
		c.AckLagTimeout = d.AckLagTimeout
	}
	if c.ProbeMisses == 0 {
		c.ProbeMisses = d.ProbeMisses
	}
	if c.DCProbeMisses == 0 {
		c.DCProbeMisses = min(d.DCProbeMisses, c.ProbeMisses)
	}
	if c.ReadmitAfter == 0 {
		c.ReadmitAfter = d.ReadmitAfter
	}
	if c.MinRTO == 0 {
		c.MinRTO = d.MinRTO
	}
	if c.InitialRTT == 0 {
		c.InitialRTT = d.InitialRTT
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = d.MaxFlows
	}
	if c.MinClients == 0 {
		c.MinClients = d.MinClients
	}
	if c.MinFlows == 0 {
		c.MinFlows = d.MinFlows
	}
	if c.PassiveInterval == 0 {
		c.PassiveInterval = d.PassiveInterval
	}
	if c.FlowIdle == 0 {
		c.FlowIdle = d.FlowIdle
	}
	if c.History == 0 {
		c.History = d.History
	}
	return c
}

// Validate reports the first field that makes no sense, by name. Zero
// fields are valid (they take defaults).
func (c Config) Validate() error {
	switch {
	case c.Mode == None:
		return fmt.Errorf("failover: Config.Mode: mode none runs no detector")
	case c.Mode != Fast && c.Mode != Paper && c.Mode != Safe:
		return fmt.Errorf("failover: Config.Mode: unknown mode %d", c.Mode)
	case c.Threshold < 0:
		return fmt.Errorf("failover: Config.Threshold %d is negative", c.Threshold)
	case c.SilenceTimeout < 0:
		return fmt.Errorf("failover: Config.SilenceTimeout %v is negative", c.SilenceTimeout)
	case c.AckLagTimeout < 0:
		return fmt.Errorf("failover: Config.AckLagTimeout %v is negative", c.AckLagTimeout)
	case c.ProbeMisses < 0:
		return fmt.Errorf("failover: Config.ProbeMisses %d is negative", c.ProbeMisses)
	case c.DCProbeMisses < 0:
		return fmt.Errorf("failover: Config.DCProbeMisses %d is negative", c.DCProbeMisses)
	case c.ReadmitAfter < 0:
		return fmt.Errorf("failover: Config.ReadmitAfter %v is negative", c.ReadmitAfter)
	case c.MinRTO < 0:
		return fmt.Errorf("failover: Config.MinRTO %v is negative", c.MinRTO)
	case c.InitialRTT < 0:
		return fmt.Errorf("failover: Config.InitialRTT %v is negative", c.InitialRTT)
	case c.MinClients < 0 || c.MinClients > 4:
		return fmt.Errorf("failover: Config.MinClients %d out of range [1, 4]", c.MinClients)
	case c.MinFlows < 0:
		return fmt.Errorf("failover: Config.MinFlows %d is negative", c.MinFlows)
	case c.PassiveInterval < 0:
		return fmt.Errorf("failover: Config.PassiveInterval %v is negative", c.PassiveInterval)
	case c.MaxFlows < 0:
		return fmt.Errorf("failover: Config.MaxFlows %d is negative", c.MaxFlows)
	case c.FlowIdle < 0:
		return fmt.Errorf("failover: Config.FlowIdle %v is negative", c.FlowIdle)
	case c.History < 0:
		return fmt.Errorf("failover: Config.History %d is negative", c.History)
	}
	f := c.withDefaults()
	if f.DCProbeMisses > f.ProbeMisses {
		return fmt.Errorf("failover: Config.DCProbeMisses %d exceeds ProbeMisses %d", f.DCProbeMisses, f.ProbeMisses)
	}
	return nil
}
