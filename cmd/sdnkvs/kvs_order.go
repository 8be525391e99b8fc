package main

import (
	"fmt"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
)

// OrderSecret is the --order-secret-file flag of sequenced nodes: the secret
// the middlebox proves when it dials the order stream.
type OrderSecret struct {
	OrderSecretFile string `name:"order-secret-file" type:"path" placeholder:"FILE" help:"Secret shared with the middlebox's order stream (at least 16 bytes); required in sequenced mode."`
	Secret          []byte `kong:"-"`
}

// load reads the secret when sequenced mode is on (on is the order flag's
// name and whether it was given).
func (o *OrderSecret) load(flag string, on bool) error {
	if !on {
		if o.OrderSecretFile != "" {
			return fmt.Errorf("--order-secret-file is only meaningful with %s", flag)
		}
		return nil
	}
	if o.OrderSecretFile == "" {
		return fmt.Errorf("%s needs --order-secret-file", flag)
	}
	s, err := peerauth.LoadSecret(o.OrderSecretFile)
	if err != nil {
		return fmt.Errorf("--order-secret-file: %w", err)
	}
	o.Secret = s
	return nil
}

// Validate loads the order secret of a sequenced node.
func (c *KvsNodeCmd) Validate() error {
	return c.OrderSecret.load("--order-listen", c.OrderListen != "")
}

// Validate loads the order secret of a sequenced cluster.
func (c *KvsClusterCmd) Validate() error {
	if c.OrderPort < 0 || c.OrderPort > 65535 {
		return fmt.Errorf("--order-port %d out of range 0..65535", c.OrderPort)
	}
	return c.OrderSecret.load("--order-port", c.OrderPort != 0)
}
