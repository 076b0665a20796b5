package main

import (
	"bytes"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/cliargs"
	"github.com/meshd/meshd/internal/completion"
)

// TestInterspersed: the reordering with meshd's own commands and flags.
func TestInterspersed(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"meshd", "maint", "on", "--reason", "x y", "--socket", "/s"}, []string{"meshd", "maint", "--reason", "x y", "--socket", "/s", "--", "on"}},
		{[]string{"meshd", "ping", "n2", "--count=3", "--json"}, []string{"meshd", "ping", "--count=3", "--json", "--", "n2"}},
		{[]string{"meshd", "maint", "--json", "off"}, []string{"meshd", "maint", "--json", "--", "off"}},
		{[]string{"meshd", "status", "--json"}, []string{"meshd", "status", "--json"}},
		{[]string{"meshd", "config", "check", "--config", "f"}, []string{"meshd", "config", "check", "--config", "f"}},
		{[]string{"meshd", "nosuch", "a", "--b"}, []string{"meshd", "nosuch", "a", "--b"}},
		{[]string{"meshd", "bench-wgref", "--port", "1", "--dev", "d"}, []string{"meshd", "bench-wgref", "--port", "1", "--dev", "d"}},
	} {
		if got := cliargs.Interspersed(app, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Interspersed(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestCompletion: the scripts name every visible command and are valid
// for the shells that are installed.
func TestCompletion(t *testing.T) {
	cmds := completion.FromCLI(newApp().Commands, completionHints)
	for _, sh := range []string{"bash", "zsh", "fish"} {
		var b bytes.Buffer
		switch sh {
		case "bash":
			completion.WriteBash(&b, cmds)
		case "zsh":
			completion.WriteZsh(&b, cmds)
		case "fish":
			completion.WriteFish(&b, cmds)
		}
		for _, c := range []string{"join", "reload", "maint", "ping", "config", "completion", "--config"} {
			if !strings.Contains(b.String(), c) {
				t.Errorf("%s script does not mention %s", sh, c)
			}
		}
		if strings.Contains(b.String(), "bench-worker") {
			t.Errorf("%s script lists a hidden command", sh)
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

// TestCompletionWhileRunning: the script printed by `meshd completion bash`
// (urfave/cli has then added a help subcommand and flag to the running
// command) completes the shells after `completion`, not "help", and
// offers --help once.
func TestCompletionWhileRunning(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	if err := app.Run([]string{"meshd", "completion", "bash"}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	i := strings.Index(s, "completion)")
	if i < 0 {
		t.Fatalf("no completion case in:\n%s", s)
	}
	line := s[i : i+strings.Index(s[i:], ";;")]
	if !strings.Contains(line, "bash zsh fish") || strings.Contains(line, "help)") ||
		strings.Contains(line, `"help"`) || strings.Count(line, "--help") != 1 {
		t.Errorf("completion case offers the wrong words:\n%s", line)
	}
}
