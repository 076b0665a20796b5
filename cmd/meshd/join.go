package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/node"
)

// stopSlack is how much longer than the drain grace a graceful shutdown
// may take before the process exits anyway.
const stopSlack = 5 * time.Second

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "run this node in the foreground until SIGINT/SIGTERM",
		UsageText: "meshd join --config /etc/meshd/meshd.yaml [--name N] [--site S] [--join HOST:PORT ...] [--data-dir DIR]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "node configuration `FILE` (YAML)", Required: true},
			&cli.StringFlag{Name: "name", Usage: "node name, unique in the mesh (overrides the file)"},
			&cli.StringFlag{Name: "site", Usage: "failure domain of this node (overrides the file)"},
			&cli.StringSliceFlag{Name: "join", Usage: "gossip `HOST:PORT` of an existing node; repeatable (replaces cluster.join)"},
			&cli.StringFlag{Name: "data-dir", Usage: "`DIR` for the node key and control socket (overrides the file)"},
		},
		Action: runJoin,
	}
}

func runJoin(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("join takes no arguments, got %q", c.Args().First()), 2)
	}
	cfg, err := config.Load(c.String("config"), config.Overrides{
		Name: c.String("name"), Site: c.String("site"), Join: c.StringSlice("join"), DataDir: c.String("data-dir"),
	})
	if err != nil {
		return err
	}
	lg := newLogger(os.Stderr, cfg.Log)
	n, err := node.New(cfg, lg)
	if err != nil {
		return err
	}
	// Catch signals before starting so an early SIGTERM still leaves cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := n.Start(); err != nil {
		return err
	}
	sig := <-sigs
	lg.Info("signal received; leaving the mesh", "signal", sig.String())
	done := make(chan struct{})
	go func() {
		n.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-sigs:
		return cli.Exit("second signal: exiting without a clean shutdown", 1)
	case <-time.After(cfg.Failover.DrainGrace + stopSlack):
		return cli.Exit("shutdown took too long; exiting", 1)
	}
	return nil
}

// newLogger builds the process logger from the log section.
func newLogger(w io.Writer, lc config.Log) *slog.Logger {
	var lvl slog.Level
	switch lc.Level {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
