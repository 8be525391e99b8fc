package main

import "errors"

// MiddleboxCmd is being written; this placeholder keeps the binary building.
type MiddleboxCmd struct{}

func (c *MiddleboxCmd) Run(g *Globals) error { return errors.New("not implemented yet") }
