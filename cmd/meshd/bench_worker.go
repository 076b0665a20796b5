package main

// Hidden helper commands of `meshd bench`, started by it as child
// processes (possibly behind `ip netns exec`): bench-worker runs
// measurement clients and target servers (internal/bench's worker
// protocol on stdin/stdout), bench-wgref runs plain wireguard-go on a
// kernel TUN device as the reference for what WireGuard itself costs.
// Both end when their stdin closes, on SIGINT/SIGTERM, or after
// lab.ChildLifetime.

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/lab"
)

func benchWorkerCommand() *cli.Command {
	return &cli.Command{
		Name:   "bench-worker",
		Usage:  "internal: a measurement worker of meshd bench (JSON lines on stdin/stdout)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit("bench-worker takes no arguments", 2)
			}
			ctx, stop := interruptible(c)
			defer stop()
			return lab.ServeWorker(ctx, os.Stdin, os.Stdout)
		},
	}
}

func benchWGRefCommand() *cli.Command {
	return &cli.Command{
		Name:            "bench-wgref",
		Usage:           "internal: plain wireguard-go on a kernel TUN device, the reference of meshd bench --netns",
		UsageText:       "meshd bench-wgref --dev DEV --private KEY --port N --peer KEY --endpoint IP:PORT --addr CIDR --allowed CIDR [--mtu N] [--verbose]",
		Hidden:          true,
		SkipFlagParsing: true, // lab.ParseWGRefFlags reads what lab.WGRef.Flags wrote
		Action: func(c *cli.Context) error {
			w, err := lab.ParseWGRefFlags(c.Args().Slice())
			if err != nil {
				return cli.Exit("bench-wgref: "+err.Error(), 2)
			}
			ctx, stop := interruptible(c)
			defer stop()
			return w.Serve(ctx, os.Stdin, os.Stdout)
		},
	}
}
