package main

import "errors"

// BenchFailoverCmd is being written; this placeholder keeps the binary building.
type BenchFailoverCmd struct{}

func (c *BenchFailoverCmd) Run(g *Globals) error { return errors.New("not implemented yet") }
