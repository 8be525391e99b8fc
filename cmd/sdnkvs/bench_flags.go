//go:build linux

package main

import (
	"fmt"
	"os"
)

// BinFlag is the sdnkvs binary that `demo` and `bench` commands run as
// stores and middlebox: --bin, by default this executable.
type BinFlag struct {
	Bin string `name:"bin" type:"path" help:"sdnkvs binary run as the stores and the middlebox (default: this executable)."`
}

// binary returns --bin, or this executable's path.
func (f BinFlag) binary() (string, error) {
	if f.Bin != "" {
		return f.Bin, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("--bin: cannot find this executable: %w", err)
	}
	return exe, nil
}
