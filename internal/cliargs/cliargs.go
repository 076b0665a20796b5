// Package cliargs reorders a meshd command line for urfave/cli, which
// stops parsing flags at the first positional argument: Interspersed moves
// a command's positional arguments after its flags, so that
// `meshd maint on --reason x` and `meshd ping PEER --count 3` work.
package cliargs

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Interspersed returns args (os.Args: program, command, rest) with the
// command's flags first, then "--" and its positional arguments in their
// order. A flag that takes a value keeps the argument after it. args is
// returned as is for an unknown command, one with subcommands or one that
// parses its own flags (SkipFlagParsing), or with no arguments after the
// command.
func Interspersed(app *cli.App, args []string) []string {
	if len(args) < 3 {
		return args
	}
	var cmd *cli.Command
	for _, c := range app.Commands {
		if c.HasName(args[1]) {
			cmd = c
		}
	}
	if cmd == nil || len(cmd.Subcommands) > 0 || cmd.SkipFlagParsing {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		if d, ok := f.(cli.DocGenerationFlag); ok && d.TakesValue() {
			for _, n := range f.Names() {
				takesValue[n] = true
			}
		}
	}
	flags, pos := []string{}, []string{}
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			pos = append(pos, rest[i:]...)
			i = len(rest)
		case strings.HasPrefix(a, "-") && a != "-":
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(rest) {
				i++
				flags = append(flags, rest[i])
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) > 0 && pos[0] != "--" {
		pos = append([]string{"--"}, pos...)
	}
	out := append([]string{args[0], args[1]}, flags...)
	return append(out, pos...)
}
