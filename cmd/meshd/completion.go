package main

import (
	"fmt"
	"slices"
	"sort"

	"github.com/meshd/meshd/internal/completion"
	"github.com/urfave/cli/v2"
)

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:  "completion",
		Usage: "print a shell completion script (bash, zsh or fish)",
		UsageText: "meshd completion bash|zsh|fish\n\n" +
			"  bash: source <(meshd completion bash)   or  meshd completion bash > /etc/bash_completion.d/meshd\n" +
			"  zsh:  meshd completion zsh > \"${fpath[1]}/_meshd\"   (then compinit)\n" +
			"  fish: meshd completion fish > ~/.config/fish/completions/meshd.fish",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("completion takes one argument: bash, zsh or fish", 2)
			}
			cmds := visibleCommands(c.App.Commands, false)
			switch c.Args().First() {
			case "bash":
				completion.WriteBash(c.App.Writer, cmds)
			case "zsh":
				completion.WriteZsh(c.App.Writer, cmds)
			case "fish":
				completion.WriteFish(c.App.Writer, cmds)
			default:
				return cli.Exit(fmt.Sprintf("unknown shell %q: use bash, zsh or fish", c.Args().First()), 2)
			}
			return nil
		},
	}
}

// visibleCommands describes the commands that are not hidden for the
// completion scripts.
func visibleCommands(cs []*cli.Command, nested bool) []completion.Command {
	var out []completion.Command
	for _, c := range cs {
		// urfave/cli adds a "help" subcommand to every command it runs
		// (the completion command included); it is not one to complete.
		if c.Hidden || (nested && c.Name == "help") {
			continue
		}
		cc := completion.Command{Name: c.Name, Usage: c.Usage, Subs: visibleCommands(c.Subcommands, true)}
		switch c.Name {
		case "completion":
			cc.Args, cc.ArgName = []string{"bash", "zsh", "fish"}, "shell"
		case "maint":
			cc.Args, cc.ArgName = []string{"on", "off"}, "mode"
		}
		for _, f := range c.Flags {
			if slices.Contains(f.Names(), "help") {
				continue // added by urfave/cli to a command it runs; appended below for all
			}
			cf := completion.Flag{Names: f.Names()}
			sort.SliceStable(cf.Names, func(i, j int) bool { return len(cf.Names[i]) > len(cf.Names[j]) })
			if d, ok := f.(cli.DocGenerationFlag); ok {
				cf.Usage, cf.Value = d.GetUsage(), d.TakesValue()
			}
			switch cf.Names[0] {
			case "config", "socket", "data-dir", "out", "ca":
				cf.File = true
			}
			cc.Flags = append(cc.Flags, cf)
		}
		cc.Flags = append(cc.Flags, completion.Flag{Names: []string{"help", "h"}, Usage: "show help"})
		out = append(out, cc)
	}
	return out
}
