package main

import (
	"github.com/urfave/cli/v2"
)

func pingCommand() *cli.Command {
	return &cli.Command{
		Name:      "ping",
		Usage:     "round trips to a peer through the tunnel: path, relay, RTT each, endpoint",
		UsageText: "meshd ping PEER [--count N] [--json] [--config FILE | --socket PATH]",
		Flags: append(socketFlags(),
			&cli.IntFlag{Name: "count", Aliases: []string{"n"}, Value: 4, Usage: "how many round trips"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			return cli.Exit("ping: not implemented yet", 1)
		},
	}
}
