package completion

import (
	"slices"
	"sort"

	"github.com/urfave/cli/v2"
)

// Hints are what urfave/cli commands do not say about themselves.
type Hints struct {
	// Args are the words of a command's one positional argument, by
	// command name.
	Args map[string]Arg
	// FileFlags are the long names of the flags whose value is a file or
	// directory.
	FileFlags []string
}

// Arg is the words a positional argument takes; Name describes them.
type Arg struct {
	Words []string
	Name  string
}

// FromCLI describes the commands that are not hidden, with their flags
// and subcommands, for WriteBash, WriteZsh and WriteFish. Every command
// gets one --help (urfave/cli adds a help flag, and a help subcommand, to
// a command it runs; neither is listed twice).
func FromCLI(cs []*cli.Command, h Hints) []Command {
	return fromCLI(cs, h, false)
}

func fromCLI(cs []*cli.Command, h Hints, nested bool) []Command {
	var out []Command
	for _, c := range cs {
		if c.Hidden || (nested && c.Name == "help") {
			continue
		}
		cc := Command{Name: c.Name, Usage: c.Usage, Subs: fromCLI(c.Subcommands, h, true)}
		if a, ok := h.Args[c.Name]; ok {
			cc.Args, cc.ArgName = a.Words, a.Name
		}
		for _, f := range c.Flags {
			if slices.Contains(f.Names(), "help") {
				continue // added by urfave/cli to a command it runs; appended below for all
			}
			cf := Flag{Names: f.Names()}
			sort.SliceStable(cf.Names, func(i, j int) bool { return len(cf.Names[i]) > len(cf.Names[j]) })
			if d, ok := f.(cli.DocGenerationFlag); ok {
				cf.Usage, cf.Value = d.GetUsage(), d.TakesValue()
			}
			cf.File = slices.Contains(h.FileFlags, cf.Names[0])
			cc.Flags = append(cc.Flags, cf)
		}
		cc.Flags = append(cc.Flags, Flag{Names: []string{"help", "h"}, Usage: "show help"})
		out = append(out, cc)
	}
	return out
}
