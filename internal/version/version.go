// Package version reports this build of meshd: the release set at link
// time (go build -ldflags "-X github.com/meshd/meshd/internal/version.release=v1.2.3"),
// else "dev", followed by the VCS commit when the binary was built from a
// git checkout ("dev+1a2b3c4d5e6f", with ".dirty" for uncommitted changes).
package version

import (
	"runtime/debug"
	"sync"
)

var release = "dev"

var once = sync.OnceValue(func() string {
	v := release
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += "+" + rev
		if dirty {
			v += ".dirty"
		}
	}
	return v
})

// String returns the version, e.g. "dev+1a2b3c4d5e6f" or "v1.2.3".
func String() string { return once() }
