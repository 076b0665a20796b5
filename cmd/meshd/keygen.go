package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/config"
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
			k, err := config.NewClusterKey()
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			fmt.Fprintln(c.App.Writer, k)
			return nil
		},
	}
}
