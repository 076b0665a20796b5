// Package completion writes shell completion scripts (bash, zsh, fish)
// for meshd from a plain description of its commands, so the scripts
// follow the command set: FromCLI describes cmd/meshd's urfave/cli
// commands, and cmd/meshd prints what WriteBash, WriteZsh or WriteFish
// write.
package completion

import (
	"fmt"
	"io"
	"strings"
)

// Flag is one flag as the scripts need it.
type Flag struct {
	Names []string // without dashes, long first
	Usage string
	Value bool // takes a value
	File  bool // the value is a file or directory
}

// Command is one command: its flags, its subcommands, and the words its
// one positional argument takes (ArgName describes them for zsh).
type Command struct {
	Name, Usage string
	Flags       []Flag
	Subs        []Command
	Args        []string
	ArgName     string
}

// fileFlags is the bash case pattern of every flag that takes a file,
// each spelling once, in order of appearance.
func fileFlags(cmds []Command) string {
	var pats []string
	seen := map[string]bool{}
	var walk func([]Command)
	walk = func(cs []Command) {
		for _, c := range cs {
			for _, f := range c.Flags {
				for _, n := range f.Names {
					if f.File && f.Value && !seen[n] {
						seen[n] = true
						pats = append(pats, dashed(n))
					}
				}
			}
			walk(c.Subs)
		}
	}
	walk(cmds)
	if len(pats) == 0 {
		return "--"
	}
	return strings.Join(pats, "|")
}

func dashed(n string) string {
	if len(n) == 1 {
		return "-" + n
	}
	return "--" + n
}

func (c Command) flagWords() string {
	var w []string
	for _, f := range c.Flags {
		for _, n := range f.Names {
			w = append(w, dashed(n))
		}
	}
	return strings.Join(w, " ")
}

func names(cs []Command) string {
	var w []string
	for _, c := range cs {
		w = append(w, c.Name)
	}
	return strings.Join(w, " ")
}

func WriteBash(w io.Writer, cmds []Command) {
	fmt.Fprintf(w, `# bash completion for meshd (meshd completion bash)
_meshd() {
    local cur prev words="" i
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    case "$prev" in
        %s)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "%s --help --version" -- "$cur")); return
    fi
    case "${COMP_WORDS[1]}" in
`, fileFlags(cmds), names(cmds))
	for _, c := range cmds {
		fmt.Fprintf(w, "        %s)\n", c.Name)
		if len(c.Subs) > 0 {
			fmt.Fprintf(w, "            if [[ $COMP_CWORD -eq 2 ]]; then words=%q; else\n", names(c.Subs))
			fmt.Fprintf(w, "            case \"${COMP_WORDS[2]}\" in\n")
			for _, s := range c.Subs {
				fmt.Fprintf(w, "                %s) words=%q ;;\n", s.Name, s.flagWords())
			}
			fmt.Fprintf(w, "            esac; fi ;;\n")
			continue
		}
		words := c.flagWords()
		if len(c.Args) > 0 {
			words = strings.Join(c.Args, " ") + " " + words
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

func zshArgs(w io.Writer, indent string, c Command) {
	fmt.Fprintf(w, "%s_arguments \\\n", indent)
	for _, f := range c.Flags {
		for _, n := range f.Names {
			spec := fmt.Sprintf("%s[%s]", dashed(n), zshEscape(f.Usage))
			if f.Value {
				if f.File {
					spec += ":file:_files"
				} else {
					spec += ":value: "
				}
			}
			fmt.Fprintf(w, "%s    '%s' \\\n", indent, spec)
		}
	}
	if len(c.Args) > 0 {
		fmt.Fprintf(w, "%s    '1:%s:(%s)' \\\n", indent, c.ArgName, strings.Join(c.Args, " "))
	}
	fmt.Fprintf(w, "%s    && return 0\n", indent)
}

func zshDescribe(w io.Writer, indent, tag string, cs []Command) {
	fmt.Fprintf(w, "%slocal -a cmds\n%scmds=(\n", indent, indent)
	for _, c := range cs {
		fmt.Fprintf(w, "%s    '%s:%s'\n", indent, c.Name, zshEscape(c.Usage))
	}
	fmt.Fprintf(w, "%s)\n%s_describe '%s' cmds\n", indent, indent, tag)
}

func WriteZsh(w io.Writer, cmds []Command) {
	fmt.Fprint(w, "#compdef meshd\n# zsh completion for meshd (meshd completion zsh)\n_meshd() {\n")
	fmt.Fprint(w, "    if (( CURRENT == 2 )); then\n")
	zshDescribe(w, "        ", "command", cmds)
	fmt.Fprint(w, "        return\n    fi\n    case $words[2] in\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "    %s)\n", c.Name)
		if len(c.Subs) > 0 {
			fmt.Fprint(w, "        if (( CURRENT == 3 )); then\n")
			zshDescribe(w, "            ", c.Name+" command", c.Subs)
			fmt.Fprint(w, "            return\n        fi\n        shift 2 words; (( CURRENT -= 2 ))\n        case $words[1] in\n")
			for _, s := range c.Subs {
				fmt.Fprintf(w, "        %s)\n", s.Name)
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

func fishFlags(w io.Writer, cond string, c Command) {
	for _, f := range c.Flags {
		var opts []string
		for _, n := range f.Names {
			if len(n) == 1 {
				opts = append(opts, "-s "+n)
			} else {
				opts = append(opts, "-l "+n)
			}
		}
		if f.Value {
			opts = append(opts, "-r")
			if f.File {
				opts = append(opts, "-F")
			}
		}
		fmt.Fprintf(w, "complete -c meshd -n '%s' %s -d '%s'\n", cond, strings.Join(opts, " "), fishEscape(f.Usage))
	}
}

func WriteFish(w io.Writer, cmds []Command) {
	fmt.Fprint(w, "# fish completion for meshd (meshd completion fish)\ncomplete -c meshd -f\n")
	fmt.Fprint(w, "complete -c meshd -n '__fish_use_subcommand' -l version -d 'print the version and exit'\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "complete -c meshd -n '__fish_use_subcommand' -a %s -d '%s'\n", c.Name, fishEscape(c.Usage))
	}
	for _, c := range cmds {
		cond := "__fish_seen_subcommand_from " + c.Name
		if len(c.Subs) > 0 {
			for _, s := range c.Subs {
				fmt.Fprintf(w, "complete -c meshd -n '%s; and not __fish_seen_subcommand_from %s' -a %s -d '%s'\n",
					cond, names(c.Subs), s.Name, fishEscape(s.Usage))
				fishFlags(w, cond+"; and __fish_seen_subcommand_from "+s.Name, s)
			}
			continue
		}
		if len(c.Args) > 0 {
			fmt.Fprintf(w, "complete -c meshd -n '%s' -a '%s'\n", cond, strings.Join(c.Args, " "))
		}
		fishFlags(w, cond, c)
	}
}
