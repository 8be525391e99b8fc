package main

import "errors"

// DemoCmd is being written; this placeholder keeps the binary building.
type DemoCmd struct{}

func (c *DemoCmd) Run(g *Globals) error { return errors.New("not implemented yet") }
