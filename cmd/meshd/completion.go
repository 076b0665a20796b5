package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

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
			cmds := visibleCommands(c.App.Commands)
			switch c.Args().First() {
			case "bash":
				writeBash(c.App.Writer, cmds)
			case "zsh":
				writeZsh(c.App.Writer, cmds)
			case "fish":
				writeFish(c.App.Writer, cmds)
			default:
				return cli.Exit(fmt.Sprintf("unknown shell %q: use bash, zsh or fish", c.Args().First()), 2)
			}
			return nil
		},
	}
}

// compFlag is one flag as the completion scripts need it.
type compFlag struct {
	names []string // without dashes, long first
	usage string
	value bool // takes a value
	file  bool // the value is a file or directory
}

type compCmd struct {
	name  string
	usage string
	flags []compFlag
	subs  []compCmd
}

func visibleCommands(cs []*cli.Command) []compCmd {
	var out []compCmd
	for _, c := range cs {
		if c.Hidden {
			continue
		}
		cc := compCmd{name: c.Name, usage: c.Usage, subs: visibleCommands(c.Subcommands)}
		for _, f := range c.Flags {
			cf := compFlag{names: f.Names()}
			sort.SliceStable(cf.names, func(i, j int) bool { return len(cf.names[i]) > len(cf.names[j]) })
			if d, ok := f.(cli.DocGenerationFlag); ok {
				cf.usage, cf.value = d.GetUsage(), d.TakesValue()
			}
			switch cf.names[0] {
			case "config", "socket", "data-dir", "out", "ca":
				cf.file = true
			}
			cc.flags = append(cc.flags, cf)
		}
		cc.flags = append(cc.flags, compFlag{names: []string{"help", "h"}, usage: "show help"})
		out = append(out, cc)
	}
	return out
}

func dashed(n string) string {
	if len(n) == 1 {
		return "-" + n
	}
	return "--" + n
}

func (c compCmd) flagWords() string {
	var w []string
	for _, f := range c.flags {
		for _, n := range f.names {
			w = append(w, dashed(n))
		}
	}
	return strings.Join(w, " ")
}

func names(cs []compCmd) string {
	var w []string
	for _, c := range cs {
		w = append(w, c.name)
	}
	return strings.Join(w, " ")
}

func writeBash(w io.Writer, cmds []compCmd) {
	fmt.Fprintf(w, `# bash completion for meshd (meshd completion bash)
_meshd() {
    local cur prev words="" i
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    case "$prev" in
        --config|-c|--socket|--data-dir|--out|--ca)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "%s --help --version" -- "$cur")); return
    fi
    case "${COMP_WORDS[1]}" in
`, names(cmds))
	for _, c := range cmds {
		fmt.Fprintf(w, "        %s)\n", c.name)
		if len(c.subs) > 0 {
			fmt.Fprintf(w, "            if [[ $COMP_CWORD -eq 2 ]]; then words=%q; else\n", names(c.subs))
			fmt.Fprintf(w, "            case \"${COMP_WORDS[2]}\" in\n")
			for _, s := range c.subs {
				fmt.Fprintf(w, "                %s) words=%q ;;\n", s.name, s.flagWords())
			}
			fmt.Fprintf(w, "            esac; fi ;;\n")
			continue
		}
		words := c.flagWords()
		switch c.name {
		case "completion":
			words = "bash zsh fish"
		case "maint":
			words = "on off " + words
		}
		fmt.Fprintf(w, "            words=%q ;;\n", words)
	}
	fmt.Fprint(w, `    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _meshd meshd
`)
}

// zshEscape escapes a description for an _arguments spec or _describe item.
func zshEscape(s string) string {
	r := strings.NewReplacer("'", "'\\''", "[", "\\[", "]", "\\]", ":", "\\:", "`", "")
	return r.Replace(s)
}

func zshArgs(w io.Writer, indent string, c compCmd) {
	fmt.Fprintf(w, "%s_arguments \\\n", indent)
	for _, f := range c.flags {
		for _, n := range f.names {
			spec := fmt.Sprintf("%s[%s]", dashed(n), zshEscape(f.usage))
			if f.value {
				if f.file {
					spec += ":file:_files"
				} else {
					spec += ":value: "
				}
			}
			fmt.Fprintf(w, "%s    '%s' \\\n", indent, spec)
		}
	}
	switch c.name {
	case "completion":
		fmt.Fprintf(w, "%s    '1:shell:(bash zsh fish)' \\\n", indent)
	case "maint":
		fmt.Fprintf(w, "%s    '1:mode:(on off)' \\\n", indent)
	}
	fmt.Fprintf(w, "%s    && return 0\n", indent)
}

func zshDescribe(w io.Writer, indent, tag string, cs []compCmd) {
	fmt.Fprintf(w, "%slocal -a cmds\n%scmds=(\n", indent, indent)
	for _, c := range cs {
		fmt.Fprintf(w, "%s    '%s:%s'\n", indent, c.name, zshEscape(c.usage))
	}
	fmt.Fprintf(w, "%s)\n%s_describe '%s' cmds\n", indent, indent, tag)
}

func writeZsh(w io.Writer, cmds []compCmd) {
	fmt.Fprint(w, "#compdef meshd\n# zsh completion for meshd (meshd completion zsh)\n_meshd() {\n")
	fmt.Fprint(w, "    if (( CURRENT == 2 )); then\n")
	zshDescribe(w, "        ", "command", cmds)
	fmt.Fprint(w, "        return\n    fi\n    case $words[2] in\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "    %s)\n", c.name)
		if len(c.subs) > 0 {
			fmt.Fprint(w, "        if (( CURRENT == 3 )); then\n")
			zshDescribe(w, "            ", c.name+" command", c.subs)
			fmt.Fprint(w, "            return\n        fi\n        shift 2 words; (( CURRENT -= 2 ))\n        case $words[1] in\n")
			for _, s := range c.subs {
				fmt.Fprintf(w, "        %s)\n", s.name)
				zshArgs(w, "            ", s)
				fmt.Fprint(w, "            ;;\n")
			}
			fmt.Fprint(w, "        esac\n        ;;\n")
			continue
		}
		fmt.Fprint(w, "        shift words; (( CURRENT-- ))\n")
		zshArgs(w, "        ", c)
		fmt.Fprint(w, "        ;;\n")
	}
	fmt.Fprint(w, "    esac\n}\nif [[ $zsh_eval_context[-1] == loadautofunc ]]; then _meshd \"$@\"; else compdef _meshd meshd; fi\n")
}

func fishEscape(s string) string { return strings.ReplaceAll(s, "'", "\\'") }

func fishFlags(w io.Writer, cond string, c compCmd) {
	for _, f := range c.flags {
		var opts []string
		for _, n := range f.names {
			if len(n) == 1 {
				opts = append(opts, "-s "+n)
			} else {
				opts = append(opts, "-l "+n)
			}
		}
		if f.value {
			opts = append(opts, "-r")
			if f.file {
				opts = append(opts, "-F")
			}
		}
		fmt.Fprintf(w, "complete -c meshd -n '%s' %s -d '%s'\n", cond, strings.Join(opts, " "), fishEscape(f.usage))
	}
}

func writeFish(w io.Writer, cmds []compCmd) {
	fmt.Fprint(w, "# fish completion for meshd (meshd completion fish)\ncomplete -c meshd -f\n")
	fmt.Fprint(w, "complete -c meshd -n '__fish_use_subcommand' -l version -d 'print the version and exit'\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "complete -c meshd -n '__fish_use_subcommand' -a %s -d '%s'\n", c.name, fishEscape(c.usage))
	}
	for _, c := range cmds {
		cond := "__fish_seen_subcommand_from " + c.name
		if len(c.subs) > 0 {
			for _, s := range c.subs {
				fmt.Fprintf(w, "complete -c meshd -n '%s; and not __fish_seen_subcommand_from %s' -a %s -d '%s'\n",
					cond, names(c.subs), s.name, fishEscape(s.usage))
				fishFlags(w, cond+"; and __fish_seen_subcommand_from "+s.name, s)
			}
			continue
		}
		switch c.name {
		case "completion":
			fmt.Fprintf(w, "complete -c meshd -n '%s' -a 'bash zsh fish'\n", cond)
		case "maint":
			fmt.Fprintf(w, "complete -c meshd -n '%s' -a 'on off'\n", cond)
		}
		fishFlags(w, cond, c)
	}
}
