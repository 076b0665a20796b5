package main

import (
	"log/slog"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/demo"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a self-contained 4-node mesh on loopback, push traffic through it, run a drill, report",
		Description: "Starts four in-process nodes in sites onprem and cloud on 127.0.0.1, an echo\n" +
			"service exported in both sites and imported on onprem-1, then pushes\n" +
			"checksummed traffic over many concurrent connections, runs a failover drill\n" +
			"(site onprem cut off, watched from cloud-2) and prints what happened.\n" +
			"Needs no config, no root and no network beyond loopback.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "conns", Value: 64, Usage: "concurrent client connections"},
			&cli.IntFlag{Name: "size", Value: 1 << 20, Usage: "bytes each connection sends (and gets back)"},
			&cli.DurationFlag{Name: "drill", Value: 3 * time.Second, Usage: "how long the closing failover drill cuts site onprem off"},
			&cli.BoolFlag{Name: "verbose", Usage: "show the nodes' logs"},
		},
		Action: func(c *cli.Context) error {
			lvl := slog.LevelError
			if c.Bool("verbose") {
				lvl = slog.LevelInfo
			}
			lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			return demo.Run(c.Context, c.App.Writer, demo.RunOptions{Conns: c.Int("conns"), Size: c.Int("size"), Drill: c.Duration("drill"), Logger: lg})
		},
	}
}
