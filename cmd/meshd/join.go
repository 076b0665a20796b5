package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/daemon"
	"github.com/meshd/meshd/internal/procs"
)

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:  "join",
		Usage: "run this node in the foreground until SIGINT/SIGTERM",
		UsageText: "meshd join --config /etc/meshd/meshd.yaml [--name N] [--site S] [--join HOST:PORT ...] [--data-dir DIR] [--log-level LEVEL]\n\n" +
			"SIGHUP re-reads the config file and applies what changed (like `meshd reload`).\n" +
			"Under systemd (Type=notify) it reports readiness, reloads and stopping with sd_notify.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "node configuration `FILE` (YAML); required"},
			&cli.StringFlag{Name: "name", Usage: "node name, unique in the mesh (overrides the file)"},
			&cli.StringFlag{Name: "site", Usage: "failure domain of this node (overrides the file)"},
			&cli.StringSliceFlag{Name: "join", Usage: "gossip `HOST:PORT` of an existing node; repeatable (replaces cluster.join)"},
			&cli.StringFlag{Name: "data-dir", Usage: "`DIR` for the node key and control socket (overrides the file)"},
			&cli.StringFlag{Name: "log-level", Usage: "`LEVEL` debug, info, warn or error (overrides log.level, also on reload)"},
		},
		Action: runJoin,
	}
}

func runJoin(c *cli.Context) error {
	if err := noArgs(c, "join"); err != nil {
		return err
	}
	if c.String("config") == "" {
		return cli.Exit("join needs --config FILE (see meshd join --help)", 2)
	}
	cfg, err := config.Load(c.String("config"), config.Overrides{
		Name: c.String("name"), Site: c.String("site"), Join: c.StringSlice("join"), DataDir: c.String("data-dir"),
		LogLevel: c.String("log-level"),
	})
	if err != nil {
		return err
	}
	p, err := daemon.Open(cfg, os.Stderr)
	if err != nil {
		return err
	}
	// Catch signals before starting so an early SIGTERM still leaves cleanly.
	stop, hup := make(chan os.Signal, 2), make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	p.Stop, p.Hangup = stop, hup
	// An idle node runs the Go scheduler on one P, and widens it at its
	// next connection (internal/procs). A relay carries others' traffic,
	// which is no connection of its own: it keeps the default.
	procs.EnableForJoin(cfg.Relay.Enabled)
	return p.Run() // an error exits 1
}
