package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print meshd's version (with the VCS commit and date) and the versions of Go, wireguard-go, memberlist and yamux",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			v := buildVersions()
			if c.Bool("json") {
				return json.NewEncoder(c.App.Writer).Encode(v)
			}
			fmt.Fprintf(c.App.Writer, "%s\nwireguard-go %s\nmemberlist %s\nyamux %s\n",
				versionLine(v), v["wireguard-go"], v["memberlist"], v["yamux"])
			return nil
		},
	}
}

// buildVersions reads the versions of meshd and its main dependencies, and
// the VCS commit, date and dirty flag that `go build` stamps from git.
func buildVersions() map[string]string {
	v := map[string]string{"meshd": version, "go": runtime.Version(),
		"wireguard-go": "unknown", "memberlist": "unknown", "yamux": "unknown",
		"commit": "", "date": "", "modified": ""}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if v["meshd"] == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v["meshd"] = bi.Main.Version
	}
	for _, d := range bi.Deps {
		switch d.Path {
		case "golang.zx2c4.com/wireguard":
			v["wireguard-go"] = d.Version
		case "github.com/hashicorp/memberlist":
			v["memberlist"] = d.Version
		case "github.com/hashicorp/yamux":
			v["yamux"] = d.Version
		}
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v["commit"] = s.Value
		case "vcs.time":
			v["date"] = s.Value
		case "vcs.modified":
			v["modified"] = s.Value
		}
	}
	return v
}

// versionLine is the first line of `meshd version`, also `meshd --version`:
// "meshd dev commit 0123456789ab 2026-11-30T10:00:00Z (modified) go1.26.8".
func versionLine(v map[string]string) string {
	var b strings.Builder
	b.WriteString("meshd " + v["meshd"])
	if c := v["commit"]; c != "" {
		b.WriteString(" commit " + c[:min(12, len(c))])
		if d := v["date"]; d != "" {
			b.WriteString(" " + d)
		}
		if v["modified"] == "true" {
			b.WriteString(" (modified)")
		}
	}
	b.WriteString(" " + v["go"])
	return b.String()
}
