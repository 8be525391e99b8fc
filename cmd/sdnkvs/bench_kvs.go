package main

import "errors"

// BenchKvsCmd is being written; this placeholder keeps the binary building.
type BenchKvsCmd struct{}

func (c *BenchKvsCmd) Run(g *Globals) error { return errors.New("not implemented yet") }
