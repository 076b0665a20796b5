package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/internal/statusfmt"
	"github.com/meshd/meshd/node"
)

func pingCommand() *cli.Command {
	return &cli.Command{
		Name:  "ping",
		Usage: "round trips to a peer through the tunnel: path, relay, RTT each, endpoint",
		UsageText: "meshd ping PEER [--count N] [--interval 1s] [--json] [--config FILE | --socket PATH]\n\n" +
			"Each round trip opens a stream to PEER (a node name) through WireGuard and yamux and\n" +
			"waits for its answer; it prints the RTT and the path (direct, or relay and which one)\n" +
			"and the WireGuard endpoint in use. Exits 1 if no round trip succeeded.",
		Flags: socketFlags(
			&cli.IntFlag{Name: "count", Aliases: []string{"n"}, Value: 4, Usage: fmt.Sprintf("how many round trips (1..%d)", node.MaxPingCount)},
			&cli.DurationFlag{Name: "interval", Aliases: []string{"i"}, Value: time.Second, Usage: "time between round trips"},
			jsonFlag("print JSON")),
		Action: runPing,
	}
}

func runPing(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("ping takes one argument: the peer's node name (see meshd ping --help)", 2)
	}
	n := c.Int("count")
	if n < 1 || n > node.MaxPingCount {
		return cli.Exit(fmt.Sprintf("--count %d not allowed: use 1..%d", n, node.MaxPingCount), 2)
	}
	iv := c.Duration("interval")
	if iv < node.MinPingInterval {
		return cli.Exit(fmt.Sprintf("--interval %v not allowed: at least %v", iv, node.MinPingInterval), 2)
	}
	sock, err := socketPath(c)
	if err != nil {
		return err
	}
	ctx, stop := interruptible(c)
	defer stop()
	res, err := control.Ping(ctx, sock, node.PingRequest{Peer: c.Args().First(), Count: n, IntervalMS: iv.Milliseconds()})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := writeJSON(c.App.Writer, res, true); err != nil {
			return err
		}
	} else {
		statusfmt.Ping(c.App.Writer, res)
	}
	if res.Received == 0 {
		return cli.Exit("", 1)
	}
	return nil
}
