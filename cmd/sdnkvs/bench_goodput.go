package main

import "errors"

// BenchGoodputCmd is being written; this placeholder keeps the binary building.
type BenchGoodputCmd struct{}

func (c *BenchGoodputCmd) Run(g *Globals) error { return errors.New("not implemented yet") }
