package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/node"
)

func drillCommand() *cli.Command {
	return &cli.Command{
		Name:  "drill",
		Usage: "cut a site's links for a while and measure how this node's imports fail over",
		UsageText: "meshd drill --site SITE [--service NAME] [--duration 20s] [--json] [--config FILE | --socket PATH]\n\n" +
			"Every node of SITE black-holes its tunnel traffic to and from nodes outside SITE for\n" +
			"the duration (gossip is left alone) and restores by itself afterwards. Meanwhile this\n" +
			"node opens a probe connection per import every 100 ms and reports the recovery time\n" +
			"(rto_ms), failback time, failed probes and which node served before/during/after.\n" +
			"Run it from a node outside SITE.",
		Flags: socketFlags(
			&cli.StringFlag{Name: "site", Usage: "the site to cut off", Required: true},
			&cli.StringFlag{Name: "service", Usage: "probe only this import (default: every import of this node)"},
			&cli.DurationFlag{Name: "duration", Value: node.DefaultDrillDuration, Usage: "how long the site stays cut off (max 10m)"},
			jsonFlag("print the report as JSON (the format is in docs/formats.md)"),
		),
		Action: runDrill,
	}
}

func runDrill(c *cli.Context) error {
	if err := noArgs(c, "drill"); err != nil {
		return err
	}
	d := c.Duration("duration")
	if d <= 0 || d > failover.MaxDrillDuration {
		return cli.Exit(fmt.Sprintf("--duration %v not allowed: use a duration up to %v", d, failover.MaxDrillDuration), 2)
	}
	sock, err := socketPath(c)
	if err != nil {
		return err
	}
	st, err := control.Status(c.Context, sock)
	if err != nil {
		return err
	}
	if site := st.Node.Site; site == c.String("site") {
		return cli.Exit(fmt.Sprintf("--site %s is this node's own site: its imports could not watch the failover; run the drill from a node outside %s", site, site), 2)
	}
	// Ctrl-C ends the request; the node then cancels the drill everywhere.
	ctx, stop := interruptible(c)
	defer stop()
	rep, err := control.Drill(ctx, sock, node.DrillRequest{Site: c.String("site"), Service: c.String("service"), DurationMS: d.Milliseconds()})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, rep, true)
	}
	rep.WriteText(c.App.Writer)
	return nil
}
