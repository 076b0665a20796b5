package completion

import (
	"reflect"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestFromCLI: hidden commands and urfave/cli's own help subcommand and
// flag are left out, every command gets one --help, long names come first,
// and the hints set the argument words and file flags.
func TestFromCLI(t *testing.T) {
	cs := []*cli.Command{
		{Name: "maint", Usage: "maintenance", Flags: []cli.Flag{
			&cli.StringFlag{Name: "c", Aliases: []string{"config"}, Usage: "config FILE"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "help", Aliases: []string{"h"}},
		}},
		{Name: "secret", Hidden: true},
		{Name: "ca", Subcommands: []*cli.Command{{Name: "init"}, {Name: "help"}}},
		{Name: "help"},
	}
	got := FromCLI(cs, Hints{Args: map[string]Arg{"maint": {[]string{"on", "off"}, "mode"}}, FileFlags: []string{"config"}})
	help := Flag{Names: []string{"help", "h"}, Usage: "show help"}
	want := []Command{
		{Name: "maint", Usage: "maintenance", Args: []string{"on", "off"}, ArgName: "mode", Flags: []Flag{
			{Names: []string{"config", "c"}, Usage: "config FILE", Value: true, File: true},
			{Names: []string{"json"}, Usage: "print JSON"},
			help,
		}},
		{Name: "ca", Subs: []Command{{Name: "init", Flags: []Flag{help}}}, Flags: []Flag{help}},
		{Name: "help", Flags: []Flag{help}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromCLI =\n%+v\nwant\n%+v", got, want)
	}
}
