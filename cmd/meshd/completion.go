package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/completion"
)

// completionHints are the positional words and file flags the scripts offer.
var completionHints = completion.Hints{
	Args: map[string]completion.Arg{
		"completion": {Words: []string{"bash", "zsh", "fish"}, Name: "shell"},
		"maint":      {Words: []string{"on", "off"}, Name: "mode"},
	},
	FileFlags: []string{"config", "socket", "data-dir", "out", "ca"},
}

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
			cmds := completion.FromCLI(c.App.Commands, completionHints)
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
