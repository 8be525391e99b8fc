//go:build linux

package testbed

// PIDAlive exports pidAlive to the external tests (testbed_test).
var PIDAlive = pidAlive
