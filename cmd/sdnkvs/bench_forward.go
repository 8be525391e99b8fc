package main

import "errors"

// BenchForwardCmd is being written; this placeholder keeps the binary building.
type BenchForwardCmd struct{}

func (c *BenchForwardCmd) Run(g *Globals) error { return errors.New("not implemented yet") }
