package config

import (
	"strings"
	"testing"
)

func TestLimitKeys(t *testing.T) {
	t.Setenv(KeyEnv, key32)
	good := `site: a
limits:
  max_streams_per_peer: 100
  max_peers: 0
exports:
  - name: web
    target: 127.0.0.1:80
    max_conns: 50
imports:
  - name: web
    listen: 127.0.0.1:8080
    max_conns: 10
    rate: 2.5
    burst: 5
  - name: db
    listen: 127.0.0.1:8081
    rate: 20
`
	c, err := Parse("m.yaml", []byte(good), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits != (Limits{MaxStreamsPerPeer: 100, MaxPeers: DefaultMaxPeers}) {
		t.Errorf("limits %+v", c.Limits)
	}
	if c.Exports[0].MaxConns != 50 {
		t.Errorf("export max_conns %d", c.Exports[0].MaxConns)
	}
	if im := c.Imports[0]; im.MaxConns != 10 || im.Rate != 2.5 || im.Burst != 5 {
		t.Errorf("import limits %+v", im)
	}
	if im := c.Imports[1]; im.MaxConns != 0 || im.Rate != 20 || im.Burst != 0 {
		t.Errorf("import limits %+v", im)
	}

	for _, tc := range []struct{ yaml, want string }{
		{"site: a\nlimits:\n  max_peers: -1\n", "m.yaml:3: limits.max_peers: the number -1 is not allowed; want a number of peers"},
		{"site: a\nlimits:\n  max_streams_per_peer: lots\n", "m.yaml:3: limits.max_streams_per_peer: "},
		{"site: a\nlimits:\n  max_stream: 1\n", "m.yaml:3: limits.max_stream: unknown key in limits; allowed keys: max_streams_per_peer, max_peers"},
		{"site: a\nexports:\n  - name: x\n    target: h:1\n    max_conns: 1.5\n", "m.yaml:5: exports[0].max_conns: "},
		{"site: a\nimports:\n  - name: x\n    listen: 127.0.0.1:1\n    rate: -2\n", "m.yaml:5: imports[0].rate: "},
		{"site: a\nimports:\n  - name: x\n    listen: 127.0.0.1:1\n    rate: fast\n", "m.yaml:5: imports[0].rate: "},
		{"site: a\nimports:\n  - name: x\n    listen: 127.0.0.1:1\n    burst: -1\n", "m.yaml:5: imports[0].burst: "},
	} {
		_, err := Parse("m.yaml", []byte(tc.yaml), Overrides{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want one line containing %q", tc.yaml, err, tc.want)
		}
	}
}
