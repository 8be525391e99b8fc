//go:build linux

// Package testbed builds the SDN-KVS topology (docs/design.md section 3) on one
// Linux machine from network namespaces, and emulates each WAN link in user
// space, since this kernel has no netem.
//
//	 <id>-client            <id>-gw                              <id>-<dc k>
//	┌───────────┐ veth  ┌──────────────┐  link k (veth, or TUN ⇄ delay  ┌──────────────────┐
//	│10.200.1.2 ├───────┤10.200.1.1    │  line ⇄ TUN when delayed,      │ lo: 10.210.k.11.. │
//	│default→gw │       │ ip_forward=1 ├────────────────────────────────┤ 10.220.k.2        │
//	└───────────┘       │ rp_filter=0  │ 10.220.k.1        rate, loss)  │ default→gw        │
//	                    │ (middlebox:  │                                └──────────────────┘
//	                    │  TUN + VIP   │
//	                    │  10.200.100.1)
//	                    └──────────────┘
//
// A DC link with no delay, rate or loss is a veth pair (kernel speed). Any
// other link is two TUN devices, one per namespace, joined by one [DelayLine]
// per direction running in the process that called [Up]: read a packet,
// compute departure = max(now, last departure) + size*8/rate and release =
// departure + delay, queue it (drop-tail by bytes), and write it out at its
// release time.
//
// [Up] returns a [Testbed] whose Close tears everything down (processes
// started through it killed by PID, delay lines stopped, namespaces
// deleted). [ForTest] wires Close into t.Cleanup. The CLI runs the same code
// in a background supervisor ([Serve]) that owns the delay lines and answers
// cut/heal/status/down on a unix socket under [StateDir].
package testbed
