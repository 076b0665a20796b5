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
	return &cli.App{
		Name:  "meshd",
		Usage: "a hybrid-cloud TCP tunnel mesh over WireGuard",
		Description: "meshd runs on every server in every site. Nodes find each other by gossip,\n" +
			"build WireGuard tunnels to each other and carry TCP streams between sites.\n" +
			"Each node exports local TCP services by name and imports mesh services as\n" +
			"local listening ports; new connections fail over between sites.",
		HideVersion:          true,
		EnableBashCompletion: false,
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints errors
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return cli.Exit(fmt.Sprintf("%v (see %s --help)", err, c.Command.HelpName), 2)
		},
		Commands: []*cli.Command{
			keygenCommand(),
			joinCommand(),
			statusCommand(),
			drillCommand(),
			demoCommand(),
			versionCommand(),
		},
	}
}
