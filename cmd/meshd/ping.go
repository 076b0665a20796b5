package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

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
		Flags: append(socketFlags(),
			&cli.IntFlag{Name: "count", Aliases: []string{"n"}, Value: 4, Usage: fmt.Sprintf("how many round trips (1..%d)", node.MaxPingCount)},
			&cli.DurationFlag{Name: "interval", Aliases: []string{"i"}, Value: time.Second, Usage: "time between round trips"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
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
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			req := node.PingRequest{Peer: c.Args().First(), Count: n, IntervalMS: iv.Milliseconds()}
			var res node.PingResult
			if err := controlDo(ctx, sock, http.MethodPost, "/ping", req, &res, time.Duration(n)*(iv+3*time.Second)+10*time.Second); err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printPing(c, res)
			}
			if res.Received == 0 {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

func printPing(c *cli.Context, res node.PingResult) {
	w := c.App.Writer
	fmt.Fprintf(w, "PING %s (site %s) through the tunnel\n", res.Peer, res.Site)
	for _, r := range res.Replies {
		path := r.Path
		if r.RelayVia != "" {
			path += " via " + r.RelayVia
		}
		if !r.OK {
			fmt.Fprintf(w, "seq=%d failed: %s (path %s)\n", r.Seq, r.Error, path)
			continue
		}
		fmt.Fprintf(w, "seq=%d rtt=%.3fms path=%s endpoint=%s\n", r.Seq, r.RTTMs, path, dash(r.Endpoint))
	}
	loss := 100 * float64(res.Sent-res.Received) / float64(max(res.Sent, 1))
	fmt.Fprintf(w, "%d sent, %d received, %.0f%% loss; rtt min/avg/max %.3f/%.3f/%.3f ms\n",
		res.Sent, res.Received, loss, res.MinMs, res.AvgMs, res.MaxMs)
}
