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
	"github.com/meshd/meshd/internal/sdnotify"
	"github.com/meshd/meshd/node"
)

// stopSlack is how much longer than the drain grace a graceful shutdown
// may take before the process exits anyway.
const stopSlack = 5 * time.Second

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
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("join takes no arguments, got %q", c.Args().First()), 2)
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
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Log.Level))
	lg := newLogger(os.Stderr, cfg.Log, level)
	n, err := node.New(cfg, lg)
	if err != nil {
		return err
	}
	n.OnReload("log.level", func(old, cfg *config.Config) (func(), func(), error) {
		if old.Log.Level == cfg.Log.Level {
			return nil, nil, nil
		}
		return func() {
			level.Set(parseLevel(cfg.Log.Level))
			lg.Info("reload: log level changed", "level", cfg.Log.Level)
			n.ReloadNote("log level %s", cfg.Log.Level)
		}, nil, nil
	})
	// Catch signals before starting so an early SIGTERM still leaves cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	if err := n.Start(); err != nil {
		return err
	}
	if _, err := sdnotify.Notify(sdnotify.Ready, "STATUS=running"); err != nil {
		lg.Warn("systemd notify", "err", err)
	}
	var sig os.Signal
	for sig == nil {
		select {
		case sig = <-sigs:
		case err := <-n.Fatal():
			n.Close()
			return cli.Exit(err.Error(), 1)
		case <-hups:
			sdnotify.Notify(sdnotify.Reloading, sdnotify.MonotonicUsec())
			if err := n.ReloadFile(); err != nil {
				lg.Error("reload (SIGHUP) refused; nothing changed", "err", err)
				sdnotify.Notify(sdnotify.Ready, "STATUS=running; last reload refused: "+err.Error())
			} else {
				sdnotify.Notify(sdnotify.Ready, "STATUS=running")
			}
		}
	}
	sdnotify.Notify(sdnotify.Stopping)
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
	case <-time.After(n.Config().Failover.DrainGrace + stopSlack):
		return cli.Exit("shutdown took too long; exiting", 1)
	}
	return nil
}

// parseLevel maps log.level to a slog level (info when unknown).
func parseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// newLogger builds the process logger from the log section; level, when
// not nil, is the live level (a reload changes it) and replaces lc.Level.
func newLogger(w io.Writer, lc config.Log, level *slog.LevelVar) *slog.Logger {
	var lvl slog.Leveler = parseLevel(lc.Level)
	if level != nil {
		lvl = level
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
