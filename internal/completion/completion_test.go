package completion

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

var cmds = []Command{
	{Name: "join", Usage: "run a node", Flags: []Flag{
		{Names: []string{"config", "c"}, Usage: "the config file", Value: true, File: true},
		{Names: []string{"log-level"}, Usage: "level: debug, info", Value: true},
		{Names: []string{"help", "h"}, Usage: "show help"},
	}},
	{Name: "maint", Usage: "maintenance [on|off]", Args: []string{"on", "off"}, ArgName: "mode",
		Flags: []Flag{{Names: []string{"reason"}, Usage: "why it's down", Value: true}}},
	{Name: "cert", Usage: "certificates", Subs: []Command{
		{Name: "sign", Usage: "sign a node key", Flags: []Flag{{Names: []string{"ca"}, Usage: "CA dir", Value: true, File: true}}},
		{Name: "show", Usage: "show a certificate"},
	}},
}

// TestScripts: each script names every command, subcommand, flag and
// argument word, completes files after file flags only, and is valid
// syntax for its shell where the shell is installed.
func TestScripts(t *testing.T) {
	for sh, write := range map[string]func(*bytes.Buffer){
		"bash": func(b *bytes.Buffer) { WriteBash(b, cmds) },
		"zsh":  func(b *bytes.Buffer) { WriteZsh(b, cmds) },
		"fish": func(b *bytes.Buffer) { WriteFish(b, cmds) },
	} {
		var b bytes.Buffer
		write(&b)
		s := b.String()
		for _, w := range []string{"join", "maint", "cert", "sign", "show", "config", "log-level", "reason", "on", "off", "ca"} {
			if !strings.Contains(s, w) {
				t.Errorf("%s script lacks %q", sh, w)
			}
		}
		if sh == "bash" && !strings.Contains(s, "        --config|-c|--ca)\n") {
			t.Errorf("bash: file flags not --config|-c|--ca:\n%s", s)
		}
		if sh == "zsh" && (!strings.Contains(s, "'--config[the config file]:file:_files'") || !strings.Contains(s, "'1:mode:(on off)'") ||
			!strings.Contains(s, `why it'\''s down`)) {
			t.Errorf("zsh: file flag, argument words or quoting wrong:\n%s", s)
		}
		if sh == "fish" && !strings.Contains(s, "-l config -s c -r -F") {
			t.Errorf("fish: file flag wrong:\n%s", s)
		}
		path, err := exec.LookPath(sh)
		if err != nil {
			t.Logf("%s not installed: syntax not checked", sh)
			continue
		}
		args := []string{"-n"}
		if sh == "fish" {
			args = []string{"--no-execute"}
		}
		cmd := exec.Command(path, args...)
		cmd.Stdin = &b
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", sh, err, out)
		}
	}
}

func TestFileFlagsNone(t *testing.T) {
	if got := fileFlags([]Command{{Name: "x"}}); got != "--" {
		t.Errorf("fileFlags without file flags = %q", got)
	}
}
