package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/version"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print meshd's version (with the VCS commit and date) and the versions of Go, wireguard-go, memberlist and yamux",
		Flags: []cli.Flag{jsonFlag("print JSON")},
		Action: func(c *cli.Context) error {
			if c.Bool("json") {
				return writeJSON(c.App.Writer, version.Get().Flat(), false)
			}
			fmt.Fprint(c.App.Writer, version.Get().Text())
			return nil
		},
	}
}
