//go:build linux

// Package e2e holds the end-to-end tests of the DC lifecycle (issue 9,
// docs/design-lifecycle.md) on the namespace testbed with kernel TCP:
// sequenced stores with catch-up between the DCs, the middlebox at the
// edge, cuts and heals of whole DCs. It has no code of its own; the tests
// need root and run (never skip) under CI=true.
package e2e
