// Command meshd runs a node of the meshd TCP tunnel mesh, and the tools
// around it: keygen, status, drill, demo, version. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/cliargs"
	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/internal/version"
)

func main() {
	app := newApp()
	if err := app.Run(cliargs.Interspersed(app, os.Args)); err != nil {
		var ec cli.ExitCoder
		code := 1
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "meshd: "+msg)
		}
		os.Exit(code)
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "meshd",
		Usage: "a hybrid-cloud TCP tunnel mesh over WireGuard",
		Description: "meshd runs on every server in every site. Nodes find each other by gossip,\n" +
			"build WireGuard tunnels to each other and carry TCP streams between sites.\n" +
			"Each node exports local TCP services by name and imports mesh services as\n" +
			"local listening ports; new connections fail over between sites.",
		HideVersion:          true,
		EnableBashCompletion: false,
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints errors
		OnUsageError:         usageError,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "version", Usage: "print the version (the first line of `meshd version`) and exit"},
		},
		Action: rootAction,
		Commands: []*cli.Command{ // in the order --help lists them
			keygenCommand(), joinCommand(), statusCommand(), drillCommand(), reloadCommand(), maintCommand(),
			pingCommand(), configCommand(), completionCommand(), demoCommand(), benchCommand(),
			benchWorkerCommand(), benchWGRefCommand(), caCommand(), certCommand(), versionCommand(),
		},
	}
	var setUsage func(cs []*cli.Command)
	setUsage = func(cs []*cli.Command) {
		for _, c := range cs {
			c.OnUsageError = usageError
			setUsage(c.Subcommands)
		}
	}
	setUsage(app.Commands)
	return app
}

// rootAction runs for `meshd` without a command: --version, an unknown
// command (one line, exit 2), or the help.
func rootAction(c *cli.Context) error {
	if c.Bool("version") {
		fmt.Fprintln(c.App.Writer, version.Get().Line())
		return nil
	}
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("unknown command %q (see meshd --help)", c.Args().First()), 2)
	}
	return cli.ShowAppHelp(c)
}

// usageError turns a bad flag into one line on stderr and exit code 2.
func usageError(c *cli.Context, err error, _ bool) error {
	name := "meshd"
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	return cli.Exit(fmt.Sprintf("%v (see %s --help)", err, name), 2)
}

// Helpers the commands share: the flags of the commands that talk to a
// running node, and the usual argument, signal and JSON handling.

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
