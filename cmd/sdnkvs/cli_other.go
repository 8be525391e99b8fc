//go:build !linux

package main

// testbedCommands is empty where there are no network namespaces: the
// testbed, the demo and the benchmarks are Linux-only.
type testbedCommands struct{}
