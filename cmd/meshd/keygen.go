package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/urfave/cli/v2"
)

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:      "keygen",
		Usage:     "print a new random 32-byte cluster key (base64)",
		UsageText: "meshd keygen > /etc/meshd/cluster.key && chmod 600 /etc/meshd/cluster.key",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit("keygen takes no arguments", 2)
			}
			k := make([]byte, 32)
			if _, err := rand.Read(k); err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			fmt.Fprintln(c.App.Writer, base64.StdEncoding.EncodeToString(k))
			return nil
		},
	}
}
