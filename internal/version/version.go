// Package version says which meshd this is: the release version set at
// build time, and the VCS commit and date that `go build` records from
// git. node reports it in status, metrics and gossip; cmd/meshd prints
// Line, Text or Flat.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is set at build time with
// -ldflags "-X github.com/meshd/meshd/internal/version.Version=v1.2.3".
var Version = "dev"

// Info is what the build says about itself.
type Info struct {
	Version  string            `json:"meshd"`    // Version, or the module version when installed with go install
	Commit   string            `json:"commit"`   // VCS revision, "" when not built from git
	Date     string            `json:"date"`     // VCS commit time (RFC 3339), "" when unknown
	Modified bool              `json:"modified"` // the work tree had uncommitted changes
	Go       string            `json:"go"`       // the Go toolchain
	Deps     map[string]string `json:"deps"`     // module path → version of the libraries that matter
}

// deps are the modules whose versions Get reports.
var deps = []string{"golang.zx2c4.com/wireguard", "github.com/hashicorp/memberlist", "github.com/hashicorp/yamux", "gvisor.dev/gvisor"}

// Get reads the build information of the running binary.
func Get() Info {
	in := Info{Version: Version, Go: runtime.Version(), Deps: map[string]string{}}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in
	}
	if in.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		in.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Commit = s.Value
		case "vcs.time":
			in.Date = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	for _, d := range bi.Deps {
		for _, want := range deps {
			if d.Path == want {
				in.Deps[want] = d.Version
			}
		}
	}
	return in
}

// String is the one-line form: "dev (commit 1a2b3c4d5e6f, 2026-12-01T08:00:00Z, modified)".
func (in Info) String() string {
	s := in.Version
	var extra []string
	if in.Commit != "" {
		c := in.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		extra = append(extra, "commit "+c)
	}
	if in.Date != "" {
		extra = append(extra, in.Date)
	}
	if in.Modified {
		extra = append(extra, "modified")
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, ", ") + ")"
	}
	return s
}

// Short is what nodes tell each other and metrics label: the version and
// the first 12 characters of the commit, e.g. "dev+1a2b3c4d5e6f".
func (in Info) Short() string {
	if in.Commit == "" {
		return in.Version
	}
	c := in.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	return in.Version + "+" + c
}

// Line is the first line of `meshd version`, also `meshd --version`:
// "meshd dev (commit 0123456789ab, 2026-11-30T10:00:00Z, modified) go1.26.8".
func (in Info) Line() string {
	return "meshd " + in.String() + " " + in.Go
}

// Text is `meshd version`: Line, then the versions of wireguard-go,
// memberlist and yamux, one a line.
func (in Info) Text() string {
	v := in.Flat()
	return in.Line() + "\nwireguard-go " + v["wireguard-go"] + "\nmemberlist " + v["memberlist"] + "\nyamux " + v["yamux"] + "\n"
}

// Flat is `meshd version --json`: meshd, go, commit, date, modified and
// the versions of wireguard-go, memberlist and yamux ("unknown" when the
// build does not say).
func (in Info) Flat() map[string]string {
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
