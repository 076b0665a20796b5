package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print meshd's version and the versions of Go, wireguard-go, memberlist and yamux",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			v := map[string]string{"meshd": version, "go": runtime.Version(),
				"wireguard-go": "unknown", "memberlist": "unknown", "yamux": "unknown"}
			if bi, ok := debug.ReadBuildInfo(); ok {
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
			}
			if c.Bool("json") {
				return json.NewEncoder(c.App.Writer).Encode(v)
			}
			fmt.Fprintf(c.App.Writer, "meshd %s (%s)\nwireguard-go %s\nmemberlist %s\nyamux %s\n",
				v["meshd"], v["go"], v["wireguard-go"], v["memberlist"], v["yamux"])
			return nil
		},
	}
}
