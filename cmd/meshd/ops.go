package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/internal/statusfmt"
	"github.com/meshd/meshd/node"
)

func reloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "re-read the running node's config file and apply what changed without a restart",
		UsageText: "meshd reload [--config FILE | --socket PATH]\n\n" +
			"The node re-reads the file it was started with (same command-line overrides) and\n" +
			"applies exports, imports, checks, weights, site preferences and the log level live;\n" +
			"connections through unchanged imports and exports are not touched. A change of\n" +
			"name, site, data_dir, a listen or advertise address or tunnel.mode is refused (restart\n" +
			"needed); an invalid file changes nothing. SIGHUP does the same.",
		Flags: socketFlags(jsonFlag("print the result as JSON")),
		Action: func(c *cli.Context) error {
			if err := noArgs(c, "reload"); err != nil {
				return err
			}
			// The node reports a broken file's error: find its socket anyway.
			sock, err := control.FindSocketLenient(c.String("socket"), c.String("config"))
			if err != nil {
				return err
			}
			res, err := control.Reload(c.Context, sock)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, res, false)
			}
			statusfmt.Reload(c.App.Writer, res)
			return nil
		},
	}
}

func maintCommand() *cli.Command {
	return &cli.Command{
		Name:  "maint",
		Usage: "maintenance mode: withdraw this node's exports and refuse new streams (on), or restore them (off)",
		UsageText: "meshd maint on|off [--reason TEXT] [--json] [--config FILE | --socket PATH]\n\n" +
			"On: the node's exports leave the mesh's catalog within a second and new streams are\n" +
			"answered \"denied: maintenance\" (importers move on); active streams finish; the node\n" +
			"stays in the mesh and keeps its imports. It survives `meshd reload`, not a restart.",
		Flags: socketFlags(&cli.StringFlag{Name: "reason", Usage: "why (shown in status)"}, jsonFlag("print JSON")),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 || (c.Args().First() != "on" && c.Args().First() != "off") {
				return cli.Exit("maint takes one argument, on or off (see meshd maint --help)", 2)
			}
			on := c.Args().First() == "on"
			if !on && c.String("reason") != "" {
				return cli.Exit("--reason goes with maint on", 2)
			}
			sock, err := socketPath(c)
			if err != nil {
				return err
			}
			res, err := control.Maint(c.Context, sock, on, c.String("reason"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, res, false)
			}
			statusfmt.Maint(c.App.Writer, res)
			return nil
		},
	}
}

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "work with config files",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "validate a config file and the files it names, without starting anything",
			UsageText: "meshd config check --config FILE\n\n" +
				"Parses and validates FILE (README.md, Configuration reference), reads its\n" +
				"cluster key, and checks the node key in data_dir when it exists. Exits 0, or 1\n" +
				"with the file:line error.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "the configuration `FILE` to check"},
				&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing when the file is valid"},
				jsonFlag("print the result as JSON (errors stay one line on stderr)"),
			},
			Action: runConfigCheck,
		}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit(fmt.Sprintf("unknown config command %q (see meshd config --help)", c.Args().First()), 2)
			}
			return cli.ShowSubcommandHelp(c)
		},
	}
}

func runConfigCheck(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("config check takes no arguments, got %q (use --config FILE)", c.Args().First()), 2)
	}
	f := c.String("config")
	if f == "" {
		return cli.Exit("config check needs --config FILE", 2)
	}
	cfg, err := config.Load(f, config.Overrides{})
	if err != nil {
		return err
	}
	if err := node.CheckConfig(cfg); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, map[string]any{"ok": true, "file": f, "name": cfg.Name,
			"site": cfg.Site, "exports": len(cfg.Exports), "imports": len(cfg.Imports)}, false)
	}
	if !c.Bool("quiet") {
		fmt.Fprintf(c.App.Writer, "%s: ok (node %s, site %s, %d exports, %d imports)\n",
			f, cfg.Name, cfg.Site, len(cfg.Exports), len(cfg.Imports))
	}
	return nil
}
