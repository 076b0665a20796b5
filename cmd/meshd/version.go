package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/version"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print meshd's version (with the VCS commit and date) and the versions of Go, wireguard-go, memberlist and yamux",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			in := version.Get()
			v := buildVersions(in)
			if c.Bool("json") {
				return json.NewEncoder(c.App.Writer).Encode(v)
			}
			fmt.Fprintf(c.App.Writer, "%s\nwireguard-go %s\nmemberlist %s\nyamux %s\n",
				versionLine(in), v["wireguard-go"], v["memberlist"], v["yamux"])
			return nil
		},
	}
}

// buildVersions flattens in for `meshd version --json`.
func buildVersions(in version.Info) map[string]string {
	dep := func(p string) string {
		if v := in.Deps[p]; v != "" {
			return v
		}
		return "unknown"
	}
	return map[string]string{"meshd": in.Version, "go": in.Go, "commit": in.Commit, "date": in.Date,
		"modified":     fmt.Sprint(in.Modified),
		"wireguard-go": dep("golang.zx2c4.com/wireguard"), "memberlist": dep("github.com/hashicorp/memberlist"),
		"yamux": dep("github.com/hashicorp/yamux")}
}

// versionLine is the first line of `meshd version`, also `meshd --version`:
// "meshd dev (commit 0123456789ab, 2026-11-30T10:00:00Z, modified) go1.26.8".
func versionLine(in version.Info) string {
	return "meshd " + in.String() + " " + in.Go
}
