// Command meshd runs a node of the meshd TCP tunnel mesh, and the tools
// around it: keygen, status, drill, demo, version. See README.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/cliargs"
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
