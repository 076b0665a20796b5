package main

import (
	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/internal/statusfmt"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show this node, its peers and the service catalog",
		UsageText: "meshd status [--json] [--config FILE | --socket PATH]",
		Flags:     socketFlags(jsonFlag("print JSON (the format is in docs/formats.md)")),
		Action: func(c *cli.Context) error {
			if err := noArgs(c, "status"); err != nil {
				return err
			}
			sock, err := socketPath(c)
			if err != nil {
				return err
			}
			st, err := control.Status(c.Context, sock)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, st, true)
			}
			statusfmt.Status(c.App.Writer, st)
			return nil
		},
	}
}
