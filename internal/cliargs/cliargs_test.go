package cliargs

import (
	"reflect"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestInterspersed(t *testing.T) {
	app := &cli.App{Commands: []*cli.Command{
		{Name: "ping", Aliases: []string{"p"}, Flags: []cli.Flag{&cli.IntFlag{Name: "count", Aliases: []string{"n"}}, &cli.BoolFlag{Name: "json"}}},
		{Name: "own", SkipFlagParsing: true},
		{Name: "config", Subcommands: []*cli.Command{{Name: "check"}}},
	}}
	for _, tc := range []struct{ in, want []string }{
		{[]string{"m", "ping", "a", "--count", "3", "--json"}, []string{"m", "ping", "--count", "3", "--json", "--", "a"}},
		{[]string{"m", "p", "a", "-n", "3"}, []string{"m", "p", "-n", "3", "--", "a"}},
		{[]string{"m", "ping", "--count=3", "a", "b"}, []string{"m", "ping", "--count=3", "--", "a", "b"}},
		{[]string{"m", "ping", "--json", "a"}, []string{"m", "ping", "--json", "--", "a"}},
		{[]string{"m", "ping", "a", "--", "--json"}, []string{"m", "ping", "--", "a", "--", "--json"}},
		{[]string{"m", "ping", "--", "-x"}, []string{"m", "ping", "--", "-x"}},
		{[]string{"m", "ping", "-", "--json"}, []string{"m", "ping", "--json", "--", "-"}},
		{[]string{"m", "ping", "a", "--count"}, []string{"m", "ping", "--count", "--", "a"}}, // missing value: urfave reports it
		{[]string{"m", "ping", "--json"}, []string{"m", "ping", "--json"}},
		{[]string{"m", "ping"}, []string{"m", "ping"}},
		{[]string{"m", "own", "a", "--x", "1"}, []string{"m", "own", "a", "--x", "1"}},
		{[]string{"m", "config", "check", "--config", "f"}, []string{"m", "config", "check", "--config", "f"}},
		{[]string{"m", "nosuch", "a", "--b"}, []string{"m", "nosuch", "a", "--b"}},
	} {
		if got := Interspersed(app, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Interspersed(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}
