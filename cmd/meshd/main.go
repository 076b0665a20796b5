// Command meshd runs a node of the meshd TCP tunnel mesh, and the tools
// around it: keygen, status, drill, demo, version. See README.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	app := newApp()
	if err := app.Run(os.Args); err != nil {
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
		Commands: []*cli.Command{
			keygenCommand(),
			joinCommand(),
			statusCommand(),
			drillCommand(),
			demoCommand(),
			benchCommand(),
			benchWorkerCommand(),
			benchWGRefCommand(),
			caCommand(),
			certCommand(),
			versionCommand(),
		},
	}
	for _, c := range app.Commands {
		c.OnUsageError = usageError
	}
	return app
}

// usageError turns a bad flag into one line on stderr and exit code 2.
func usageError(c *cli.Context, err error, _ bool) error {
	name := "meshd"
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	return cli.Exit(fmt.Sprintf("%v (see %s --help)", err, name), 2)
}
