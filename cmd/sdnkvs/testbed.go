package main

import "errors"

// TestbedCmd is being written; this placeholder keeps the binary building.
type TestbedCmd struct{}

func (c *TestbedCmd) Run(g *Globals) error { return errors.New("not implemented yet") }
