package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/internal/statusfmt"
)

// socketFlags are shared by the commands that talk to a running node.
func socketFlags(more ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "the node's configuration `FILE` (to find its control socket)"},
		&cli.StringFlag{Name: "socket", Usage: "the node's control socket `PATH` (default: from --config, else " + control.DefaultSocket + ")"},
	}, more...)
}

// jsonFlag is the --json flag of a command.
func jsonFlag(usage string) cli.Flag { return &cli.BoolFlag{Name: "json", Usage: usage} }

// socketPath is the control socket the socketFlags name.
func socketPath(c *cli.Context) (string, error) {
	return control.FindSocket(c.String("socket"), c.String("config"))
}

// noArgs refuses positional arguments of the command name (exit code 2).
func noArgs(c *cli.Context, name string) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("%s takes no arguments, got %q", name, c.Args().First()), 2)
	}
	return nil
}

// interruptible is the command's context, ended by SIGINT or SIGTERM.
func interruptible(c *cli.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
}

// writeJSON prints v as one JSON object, indented or on one line.
func writeJSON(w io.Writer, v any, indent bool) error {
	enc := json.NewEncoder(w)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show this node, its peers and the service catalog",
		UsageText: "meshd status [--json] [--config FILE | --socket PATH]",
		Flags:     socketFlags(jsonFlag("print JSON (the format is in docs/formats.md)")),
		Action: func(c *cli.Context) error {
			if err := noArgs(c, "status"); err != nil {
				return err
			}
			sock, err := socketPath(c)
			if err != nil {
				return err
			}
			st, err := control.Status(c.Context, sock)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, st, true)
			}
			statusfmt.Status(c.App.Writer, st)
			return nil
		},
	}
}
