package main

import "errors"

// KvsCmd is being written; this placeholder keeps the binary building.
type KvsCmd struct{}

func (c *KvsCmd) Run(g *Globals) error { return errors.New("not implemented yet") }
