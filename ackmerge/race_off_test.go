//go:build !race

package ackmerge

const raceEnabled = false
