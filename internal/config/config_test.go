package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	rawKey = bytes.Repeat([]byte{7}, 32)
	key32  = base64.StdEncoding.EncodeToString(rawKey)
)

// write puts content in dir/name and returns its path.
func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The README "Configuration reference" example, with key_file pointing at a relative file.
const specExample = `name: onprem-1              # unique in the mesh; default: hostname
site: onprem                # failure domain; required
data_dir: /var/lib/meshd    # node private key (node.key, 0600) is created here on first start

cluster:
  key_file: keys/cluster.key
  join: ["10.0.1.5:7946"]            # gossip addresses of any existing nodes; empty for the first node

gossip:
  bind: 0.0.0.0:7946        # memberlist bind
  advertise: ""             # host:port others use, if not the bind address (NAT, 0.0.0.0)

tunnel:
  listen: 0.0.0.0:51820     # WireGuard UDP
  advertise: ""             # host:port others use to reach the WireGuard port
  mode: userspace           # userspace (default, gVisor netstack, no root) | kernel (TUN device, root)

relay:
  enabled: false            # offer this node as a relay
  listen: 0.0.0.0:7947      # relay listener (TCP)
  advertise: ""

exports:                    # local TCP services offered to the mesh
  - name: postgres
    target: 127.0.0.1:5432
    check:                  # optional TCP connect health check of the target
      interval: 2s
      timeout: 1s
    weight: 1               # relative share for load balancing (default 1)

imports:                    # mesh services made available as local TCP listeners
  - name: postgres
    listen: 127.0.0.1:15432
    sites: [onprem, cloud]  # preference order
    balance: least_conn     # least_conn (default) | round_robin

control:
  socket: ""                # default <data_dir>/meshd.sock, mode 0600

metrics:
  listen: ""                # e.g. 127.0.0.1:9469

log:
  level: info               # debug | info | warn | error
  format: text              # text | json
`

func TestSpecExample(t *testing.T) {
	t.Setenv(KeyEnv, "")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "keys/cluster.key", key32+"\n")
	path := write(t, dir, "meshd.yaml", specExample)

	got, err := Load(path, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path:    path,
		Name:    "onprem-1",
		Site:    "onprem",
		DataDir: "/var/lib/meshd",
		Cluster: Cluster{
			KeyFile: filepath.Join(dir, "keys/cluster.key"),
			Key:     rawKey,
			Keys:    [][]byte{rawKey},
			Join:    []string{"10.0.1.5:7946"},
		},
		Gossip: Gossip{Bind: netip.MustParseAddrPort("0.0.0.0:7946")},
		Tunnel: Tunnel{Listen: netip.MustParseAddrPort("0.0.0.0:51820"), Mode: ModeUserspace},
		Relay:  Relay{Listen: netip.MustParseAddrPort("0.0.0.0:7947")},
		Exports: []Export{{
			Name: "postgres", Target: "127.0.0.1:5432",
			Check:  &Check{Interval: 2 * time.Second, Timeout: time.Second},
			Weight: 1, Line: 24,
		}},
		Imports: []Import{{
			Name: "postgres", Listen: netip.MustParseAddrPort("127.0.0.1:15432"),
			Sites: []string{"onprem", "cloud"}, Balance: BalanceLeastConn, ConnectTimeout: DefaultConnectTimeout, Line: 32,
		}},
		Control:  Control{Socket: "/var/lib/meshd/meshd.sock"},
		Log:      Log{Level: "info", Format: "text"},
		Failover: Failover{SessionTimeout: DefaultSessionTimeout, HoldDown: DefaultHoldDown, DrainGrace: DefaultDrainGrace},
		Limits:   Limits{MaxStreamsPerPeer: DefaultMaxStreamsPerPeer, MaxPeers: DefaultMaxPeers},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestDefaults(t *testing.T) {
	t.Setenv(KeyEnv, key32)
	host, err := os.Hostname()
	if err != nil || !validName(host) {
		t.Skipf("hostname %q unusable: %v", host, err)
	}
	got, err := Parse("m.yaml", []byte("site: cloud\nexports:\n  - name: web\n    target: localhost:80\n    check:\n"), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path: "m.yaml", Name: host, Site: "cloud", DataDir: DefaultDataDir,
		Cluster: Cluster{Key: rawKey, Keys: [][]byte{rawKey}},
		Gossip:  Gossip{Bind: netip.MustParseAddrPort(DefaultGossipBind)},
		Tunnel:  Tunnel{Listen: netip.MustParseAddrPort(DefaultTunnelListen), Mode: ModeUserspace},
		Relay:   Relay{Listen: netip.MustParseAddrPort(DefaultRelayListen)},
		Exports: []Export{{Name: "web", Target: "localhost:80", Weight: 1, Line: 3,
			Check: &Check{Interval: 2 * time.Second, Timeout: time.Second}}},
		Control:  Control{Socket: "/var/lib/meshd/meshd.sock"},
		Log:      Log{Level: "info", Format: "text"},
		Failover: Failover{SessionTimeout: DefaultSessionTimeout, HoldDown: DefaultHoldDown, DrainGrace: DefaultDrainGrace},
		Limits:   Limits{MaxStreamsPerPeer: DefaultMaxStreamsPerPeer, MaxPeers: DefaultMaxPeers},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestValid(t *testing.T) {
	t.Setenv(KeyEnv, key32)
	tests := []struct {
		name, yaml string
		check      func(*Config) bool
	}{
		{"no check means the default check", "site: a\nexports:\n  - {name: x, target: 'db.internal:5432'}\n",
			func(c *Config) bool {
				return *c.Exports[0].Check == Check{2 * time.Second, time.Second} && c.Exports[0].Weight == 1
			}},
		{"check false turns it off", "site: a\nexports:\n  - {name: x, target: 'h:1', check: false}\n  - {name: y, target: 'h:1', check: true}\n",
			func(c *Config) bool {
				return c.Exports[0].Check == nil && *c.Exports[1].Check == Check{2 * time.Second, time.Second}
			}},
		{"proxy protocol", "site: a\nexports:\n  - {name: x, target: 'h:1', proxy_protocol: v2}\n  - {name: y, target: 'h:1', proxy_protocol: v1}\n  - {name: z, target: 'h:1'}\n",
			func(c *Config) bool {
				return c.Exports[0].ProxyProtocol == ProxyV2 && c.Exports[1].ProxyProtocol == ProxyV1 && c.Exports[2].ProxyProtocol == ""
			}},
		{"source hash and connect timeout", "site: a\nimports:\n  - {name: x, listen: '127.0.0.1:1', balance: source_hash, connect_timeout: 250ms}\n  - {name: y, listen: '127.0.0.1:2'}\n",
			func(c *Config) bool {
				return c.Imports[0].Balance == BalanceSourceHash && c.Imports[0].ConnectTimeout == 250*time.Millisecond &&
					c.Imports[1].ConnectTimeout == DefaultConnectTimeout
			}},
		{"log level override", "site: a\nlog: {level: warn}\n",
			func(c *Config) bool { return c.Log.Level == "warn" }},
		{"short interval caps default timeout", "site: a\nexports:\n  - name: x\n    target: '[::1]:80'\n    check: {interval: 500ms, timeout: ~}\n",
			func(c *Config) bool {
				return *c.Exports[0].Check == Check{500 * time.Millisecond, 500 * time.Millisecond}
			}},
		{"ephemeral bind ports", "site: a\ngossip: {bind: '127.0.0.1:0'}\ntunnel: {listen: '[::1]:0'}\nrelay: {listen: 'localhost:0'}\n",
			func(c *Config) bool {
				return c.Gossip.Bind == netip.MustParseAddrPort("127.0.0.1:0") &&
					c.Tunnel.Listen == netip.MustParseAddrPort("[::1]:0") &&
					c.Relay.Listen == netip.MustParseAddrPort("127.0.0.1:0")
			}},
		{"advertise and relay", "site: a\nrelay: {enabled: true, advertise: '198.51.100.1:7947'}\ngossip: {advertise: '[2001:db8::1]:7946'}\ntunnel: {advertise: '198.51.100.1:51820', mode: kernel}\n",
			func(c *Config) bool {
				return c.Relay.Enabled && c.Relay.Advertise.Port() == 7947 &&
					c.Gossip.Advertise == netip.MustParseAddrPort("[2001:db8::1]:7946") && c.Tunnel.Mode == ModeKernel
			}},
		{"imports", "site: a\nimports:\n  - name: x\n    listen: localhost:9000\n    balance: round_robin\n  - name: y\n    listen: 127.0.0.1:9001\n    sites: []\n",
			func(c *Config) bool {
				return len(c.Imports) == 2 && c.Imports[0].Balance == BalanceRoundRobin &&
					c.Imports[0].Listen == netip.MustParseAddrPort("127.0.0.1:9000") &&
					c.Imports[1].Sites == nil && c.Imports[1].Line == 6
			}},
		{"aliases", "site: a\nexports:\n  - {name: x, target: 'h:1', weight: &w 1000}\nimports:\n  - {name: x, listen: '127.0.0.1:1', sites: &s [a, b]}\n  - {name: y, listen: '127.0.0.1:2', sites: *s}\n",
			func(c *Config) bool {
				return c.Exports[0].Weight == 1000 && reflect.DeepEqual(c.Imports[1].Sites, []string{"a", "b"})
			}},
		{"control, metrics, log", "site: a\ncontrol: {socket: /run/m.sock}\nmetrics: {listen: ':9469'}\nlog: {level: debug, format: json}\n",
			func(c *Config) bool {
				return c.Control.Socket == "/run/m.sock" && c.Metrics.Listen == ":9469" && c.Log == Log{"debug", "json"}
			}},
		{"null sections", "site: a\ncluster:\ngossip:\nexports:\nimports: []\nlog: {level: ~}\n",
			func(c *Config) bool { return c.Exports == nil && c.Log.Level == "info" }},
		{"inline key", "site: a\ncluster: {key: '" + base64.StdEncoding.EncodeToString(make([]byte, 16)) + "'}\n",
			func(c *Config) bool { return len(c.Cluster.Key) == 16 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("m.yaml", []byte(tt.yaml), Overrides{Name: "n1"})
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "meshd.yaml")
	short := base64.StdEncoding.EncodeToString(make([]byte, 10))
	tests := []struct {
		name, yaml string
		env        string // MESHD_CLUSTER_KEY; defaults to a valid key
		want       []string
	}{
		{"empty file", "", "", []string{path + ": site: required", "--site"}},
		{"comments only", "# nothing\n", "", []string{path + ": site: required"}},
		{"syntax", "site: a\n  bad: [\n", "", []string{path + ":2: invalid YAML: mapping values are not allowed"}},
		{"tab", "site: a\n\tname: b\n", "", []string{path + ":2: invalid YAML:", "tab"}},
		{"second document", "site: a\n---\nsite: b\n", "", []string{path + ":2: ", "second YAML document"}},
		{"top-level list", "- site: a\n", "", []string{path + ":1: got a list; want a mapping with keys name, site"}},
		{"unknown top key", "site: a\nsitez: b\n", "", []string{path + ":2: sitez: unknown key at top level; allowed keys: name, site, data_dir, cluster"}},
		{"unknown nested key", "site: a\ntunnel:\n  port: 1\n", "", []string{path + ":3: tunnel.port: unknown key in tunnel; allowed keys: listen, advertise, mode"}},
		{"unknown export key", "site: a\nexports:\n  - name: x\n    target: h:1\n    port: 2\n", "", []string{path + ":5: exports[0].port: unknown key", "name, target, check, weight, allow, max_conns, proxy_protocol"}},
		{"duplicate key", "site: a\nname: b\nsite: c\n", "", []string{path + ":3: site: duplicate key; already set at line 1"}},
		{"map wanted", "site: a\ngossip: [1]\n", "", []string{path + ":2: gossip: got a list; want a mapping with keys bind, advertise"}},
		{"list wanted", "site: a\nexports:\n  name: x\n", "", []string{path + ":3: exports: got a mapping; want a list of exports"}},
		{"string wanted", "site: a\ncontrol:\n  socket: [a]\n", "", []string{path + ":3: control.socket: got a list; want a string"}},
		{"enabled string", "site: a\nrelay:\n  enabled: \"yes\"\n", "", []string{path + ":3: relay.enabled: got the string \"yes\"; want true or false"}},
		{"bad site", "site: on prem\n", "", []string{path + ":1: site: \"on prem\" is not allowed; use 1..63 characters of A-Z a-z 0-9 . _ -"}},
		{"long name", "site: a\nname: " + strings.Repeat("n", 64) + "\n", "", []string{path + ":2: name: ", "1..63 characters"}},
		{"mode", "site: a\ntunnel: {mode: fast}\n", "", []string{path + ":2: tunnel.mode: \"fast\" is not allowed; use userspace or kernel"}},
		{"bind hostname", "site: a\ngossip:\n  bind: example.com:7946\n", "", []string{path + ":3: gossip.bind: \"example.com:7946\" is not allowed; use an IP:port like 0.0.0.0:7946"}},
		{"bind big port", "site: a\ngossip:\n  bind: 0.0.0.0:70000\n", "", []string{path + ":3: gossip.bind:", "IP:port like 0.0.0.0:7946 with a port 0..65535"}},
		{"tunnel listen no port", "site: a\ntunnel:\n  listen: 0.0.0.0\n", "", []string{path + ":3: tunnel.listen:", "IP:port like 0.0.0.0:51820"}},
		{"import port 0", "site: a\nimports:\n  - name: x\n    listen: 127.0.0.1:0\n", "", []string{path + ":4: imports[0].listen: \"127.0.0.1:0\" is not allowed; use a port 1..65535"}},
		{"advertise unspecified", "site: a\ntunnel:\n  advertise: 0.0.0.0:51820\n", "", []string{path + ":3: tunnel.advertise:", "not 0.0.0.0 or ::"}},
		{"advertise port 0", "site: a\nrelay:\n  advertise: 10.0.0.1:0\n", "", []string{path + ":3: relay.advertise:", "port 1..65535"}},
		{"advertise ipv6 unspecified", "site: a\ngossip:\n  advertise: '[::]:7946'\n", "", []string{path + ":3: gossip.advertise:", "not 0.0.0.0 or ::"}},
		{"join no port", "site: a\ncluster:\n  join:\n    - 10.0.1.5:7946\n    - 10.0.1.6\n", "", []string{path + ":5: cluster.join[1]: \"10.0.1.6\" is not allowed; use host:port"}},
		{"join port 0", "site: a\ncluster:\n  join: [\"node:0\"]\n", "", []string{path + ":3: cluster.join[0]:", "port 1..65535"}},
		{"join empty host", "site: a\ncluster:\n  join: [\":7946\"]\n", "", []string{path + ":3: cluster.join[0]:", "empty host"}},
		{"join ipv6 no brackets", "site: a\ncluster:\n  join: [\"::1:7946\"]\n", "", []string{path + ":3: cluster.join[0]:", "brackets"}},
		{"join not list", "site: a\ncluster:\n  join: 10.0.1.5:7946\n", "", []string{path + ":3: cluster.join: got the string", "want a list of gossip host:port"}},
		{"target missing", "site: a\nexports:\n  - name: x\n", "", []string{path + ":3: exports[0].target: required", "127.0.0.1:5432"}},
		{"target bad port", "site: a\nexports:\n  - name: x\n    target: db:abc\n", "", []string{path + ":4: exports[0].target: \"db:abc\" is not allowed: port \"abc\"; use host:port"}},
		{"export name missing", "site: a\nexports:\n  - target: h:1\n", "", []string{path + ":3: exports[0].name: required; use 1..63 characters"}},
		{"export name bad", "site: a\nexports:\n  - name: a/b\n    target: h:1\n", "", []string{path + ":3: exports[0].name: \"a/b\" is not allowed; use 1..63"}},
		{"export empty", "site: a\nexports:\n  -\n", "", []string{path + ":3: exports[0]:", "want a mapping with name and target"}},
		{"export duplicate", "site: a\nexports:\n  - name: x\n    target: h:1\n  - name: x\n    target: h:2\n", "", []string{path + ":5: exports[1].name: \"x\" is already exported at line 3"}},
		{"interval no unit", "site: a\nexports:\n  - name: x\n    target: h:1\n    check:\n      interval: 2\n", "", []string{path + ":6: exports[0].check.interval: \"2\" is not allowed; want a Go duration > 0 like 2s"}},
		{"interval negative", "site: a\nexports:\n  - name: x\n    target: h:1\n    check: {interval: -1s}\n", "", []string{path + ":5: exports[0].check.interval:", "> 0"}},
		{"timeout > interval", "site: a\nexports:\n  - name: x\n    target: h:1\n    check:\n      interval: 1s\n      timeout: 2s\n", "", []string{path + ":7: exports[0].check.timeout: 2s is longer than interval 1s; want a timeout <= interval"}},
		{"check list", "site: a\nexports:\n  - name: x\n    target: h:1\n    check: [1s]\n", "", []string{path + ":5: exports[0].check: got a list; want a mapping with keys interval, timeout"}},
		{"weight 0", "site: a\nexports:\n  - name: x\n    target: h:1\n    weight: 0\n", "", []string{path + ":5: exports[0].weight: the number 0 is not allowed; want an integer 1..1000"}},
		{"weight big", "site: a\nexports:\n  - {name: x, target: 'h:1', weight: 1001}\n", "", []string{path + ":3: exports[0].weight:", "1..1000"}},
		{"weight float", "site: a\nexports:\n  - {name: x, target: 'h:1', weight: 1.5}\n", "", []string{path + ":3: exports[0].weight:", "integer 1..1000"}},
		{"weight string", "site: a\nexports:\n  - {name: x, target: 'h:1', weight: \"2\"}\n", "", []string{path + ":3: exports[0].weight:", "integer 1..1000"}},
		{"import name missing", "site: a\nimports:\n  - listen: 127.0.0.1:1\n", "", []string{path + ":3: imports[0].name: required"}},
		{"import listen missing", "site: a\nimports:\n  - name: x\n", "", []string{path + ":3: imports[0].listen: required", "127.0.0.1:15432"}},
		{"import listen hostname", "site: a\nimports:\n  - name: x\n    listen: db:1\n", "", []string{path + ":4: imports[0].listen:", "no host names except localhost"}},
		{"import duplicate name", "site: a\nimports:\n  - {name: x, listen: '127.0.0.1:1'}\n  - {name: x, listen: '127.0.0.1:2'}\n", "", []string{path + ":4: imports[1].name: \"x\" is already imported at line 3"}},
		{"import same listen", "site: a\nimports:\n  - name: x\n    listen: 127.0.0.1:1\n  - name: y\n    listen: localhost:1\n", "", []string{path + ":6: imports[1].listen: 127.0.0.1:1 is already used by the import at line 4"}},
		{"sites duplicate", "site: a\nimports:\n  - name: x\n    listen: 127.0.0.1:1\n    sites:\n      - a\n      - a\n", "", []string{path + ":7: imports[0].sites[1]: \"a\" is already listed at line 6"}},
		{"sites bad", "site: a\nimports:\n  - {name: x, listen: '127.0.0.1:1', sites: ['a b']}\n", "", []string{path + ":3: imports[0].sites[0]: \"a b\" is not allowed"}},
		{"sites string", "site: a\nimports:\n  - {name: x, listen: '127.0.0.1:1', sites: a}\n", "", []string{path + ":3: imports[0].sites: got the string \"a\"; want a list of site names"}},
		{"balance", "site: a\nimports:\n  - {name: x, listen: '127.0.0.1:1', balance: random}\n", "", []string{path + ":3: imports[0].balance: \"random\" is not allowed; use least_conn, round_robin or source_hash"}},
		{"connect timeout", "site: a\nimports:\n  - {name: x, listen: '127.0.0.1:1', connect_timeout: 0s}\n", "", []string{path + ":3: imports[0].connect_timeout: \"0s\" is not allowed"}},
		{"proxy protocol", "site: a\nexports:\n  - {name: x, target: 'h:1', proxy_protocol: v3}\n", "", []string{path + ":3: exports[0].proxy_protocol: \"v3\" is not allowed; use v1 or v2"}},
		{"check string", "site: a\nexports:\n  - {name: x, target: 'h:1', check: off}\n", "", []string{path + ":3: exports[0].check: got the string \"off\""}},
		{"log level", "site: a\nlog:\n  level: verbose\n", "", []string{path + ":3: log.level: \"verbose\" is not allowed; use debug, info, warn or error"}},
		{"log format", "site: a\nlog:\n  format: xml\n", "", []string{path + ":3: log.format: \"xml\" is not allowed; use text or json"}},
		{"metrics listen", "site: a\nmetrics:\n  listen: \"9469\"\n", "", []string{path + ":3: metrics.listen: \"9469\" is not allowed", "127.0.0.1:9469"}},
		{"no key", "site: a\ncluster:\n  join: []\n", "-", []string{path + ":2: cluster.key_file: no cluster key; set cluster.key_file, cluster.key or MESHD_CLUSTER_KEY (make one with `meshd keygen`)"}},
		{"no key no cluster", "site: a\n", "-", []string{path + ": cluster.key_file: no cluster key"}},
		{"key and key_file", "site: a\ncluster:\n  key_file: k\n  key: " + key32 + "\n", "-", []string{path + ":4: cluster.key: cluster.key_file is also set (line 3); use only one"}},
		{"key not base64", "site: a\ncluster:\n  key: \"not base64!\"\n", "-", []string{path + ":3: cluster.key: not base64", "want base64 of 16, 24 or 32 bytes (meshd keygen)"}},
		{"key short", "site: a\ncluster:\n  key: " + short + "\n", "-", []string{path + ":3: cluster.key: decodes to 10 bytes; want base64 of 16, 24 or 32 bytes"}},
		{"key_file missing", "site: a\ncluster:\n  key_file: nope.key\n", "-", []string{path + ":3: cluster.key_file: cannot read " + filepath.Join(dir, "nope.key") + ": no such file or directory"}},
		{"key_file bad", "site: a\ncluster:\n  key_file: bad.key\n", "-", []string{path + ":3: cluster.key_file: " + filepath.Join(dir, "bad.key") + ": ", "want base64 of 16, 24 or 32 bytes"}},
		{"env key bad", "site: a\n", "short", []string{path + ": MESHD_CLUSTER_KEY: ", "want base64 of 16, 24 or 32 bytes"}},
	}
	write(t, dir, "bad.key", "hello\n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			switch tt.env {
			case "":
				t.Setenv(KeyEnv, key32)
			case "-":
				t.Setenv(KeyEnv, "")
			default:
				t.Setenv(KeyEnv, tt.env)
			}
			_, err := Parse(path, []byte(tt.yaml), Overrides{Name: "n1"})
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			t.Log(err)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not *Error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), key32) {
				t.Errorf("error %q leaks the key", err)
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	t.Setenv(KeyEnv, key32)
	file := "name: f1\ndata_dir: /srv/meshd\ncluster:\n  join: ['10.0.0.1:7946']\n"

	c, err := Parse("m.yaml", []byte(file), Overrides{Site: "cloud"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Site != "cloud" || c.Name != "f1" || c.Control.Socket != "/srv/meshd/meshd.sock" ||
		!reflect.DeepEqual(c.Cluster.Join, []string{"10.0.0.1:7946"}) {
		t.Errorf("site only from ov: %+v", c)
	}

	ov := Overrides{Name: "n2", Site: "edge", DataDir: "/tmp/d2", Join: []string{"a.example:7946", "[::1]:7000"}}
	c, err = Parse("m.yaml", []byte(file+"site: onprem\n"), ov)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "n2" || c.Site != "edge" || c.DataDir != "/tmp/d2" || c.Control.Socket != "/tmp/d2/meshd.sock" ||
		!reflect.DeepEqual(c.Cluster.Join, ov.Join) {
		t.Errorf("overrides not applied: %+v", c)
	}

	// An explicit control.socket is kept when data_dir is overridden.
	c, err = Parse("m.yaml", []byte(file+"control: {socket: /run/x.sock}\n"), Overrides{Site: "s", DataDir: "/d"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Control.Socket != "/run/x.sock" || c.DataDir != "/d" {
		t.Errorf("socket: %+v", c.Control)
	}

	for _, tt := range []struct {
		ov   Overrides
		want string
	}{
		{Overrides{Site: "a b"}, `m.yaml: site: "a b" (from --site) is not allowed`},
		{Overrides{Site: "s", Name: "n/1"}, `m.yaml: name: "n/1" (from --name) is not allowed`},
		{Overrides{Site: "s", Join: []string{"10.0.0.1:7946", "nope"}}, `m.yaml: cluster.join[1]: "nope" (from --join) is not allowed`},
	} {
		_, err := Parse("m.yaml", []byte(file), tt.ov)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: error %v, want %q", tt.ov, err, tt.want)
		}
	}
}

func TestKeySources(t *testing.T) {
	dir := t.TempDir()
	other := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 24))
	write(t, dir, "rel.key", "\n  "+other+"  \n")
	abs := write(t, dir, "abs.key", key32) // 0600: other modes are refused (TestKeyFileMode)

	t.Run("env", func(t *testing.T) {
		t.Setenv(KeyEnv, " "+key32+"\n")
		c, err := Parse(filepath.Join(dir, "m.yaml"), []byte("site: a\n"), Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.Cluster.Key, rawKey) || c.Cluster.KeyFile != "" {
			t.Errorf("cluster %+v", c.Cluster)
		}
	})
	t.Run("relative key_file wins over env", func(t *testing.T) {
		t.Setenv(KeyEnv, key32)
		path := write(t, dir, "m.yaml", "site: a\ncluster: {key_file: rel.key}\n")
		c, err := Load(path, Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Cluster.Key) != 24 || c.Cluster.KeyFile != filepath.Join(dir, "rel.key") {
			t.Errorf("cluster %+v", c.Cluster)
		}
	})
	t.Run("absolute key_file", func(t *testing.T) {
		t.Setenv(KeyEnv, "")
		c, err := Parse("elsewhere/m.yaml", []byte("site: a\ncluster: {key_file: "+abs+"}\n"), Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.Cluster.Key, rawKey) || c.Cluster.KeyFile != abs {
			t.Errorf("cluster %+v", c.Cluster)
		}
	})
}

func TestDecodeClusterKey(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{base64.StdEncoding.EncodeToString(make([]byte, 16)), 16, ""},
		{base64.StdEncoding.EncodeToString(make([]byte, 24)), 24, ""},
		{key32 + "\n", 32, ""},
		{base64.StdEncoding.EncodeToString(make([]byte, 31)), 0, "decodes to 31 bytes"},
		{base64.RawStdEncoding.EncodeToString(make([]byte, 32)), 0, "not base64"},
		{"!!!!", 0, "not base64"},
		{"", 0, "empty key"},
	} {
		k, err := DecodeClusterKey(tt.in)
		if tt.want == "" {
			if err != nil || len(k) != tt.n {
				t.Errorf("%q: %d bytes, %v", tt.in, len(k), err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "want base64 of 16, 24 or 32 bytes (meshd keygen)") {
			t.Errorf("%q: error %v, want %q", tt.in, err, tt.want)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.yaml")
	_, err := Load(path, Overrides{})
	if err == nil || err.Error() != "read config "+path+": no such file or directory" {
		t.Errorf("error %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v is not ErrNotExist", err)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{"f.yaml", 3, "tunnel.mode", "bad"}, "f.yaml:3: tunnel.mode: bad"},
		{Error{"f.yaml", 0, "site", "required"}, "f.yaml: site: required"},
		{Error{"f.yaml", 2, "", "invalid YAML"}, "f.yaml:2: invalid YAML"},
		{Error{"", 2, "k", "m"}, "line 2: k: m"},
		{Error{"", 0, "", "m"}, "m"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestFailoverSection(t *testing.T) {
	t.Setenv("MESHD_CLUSTER_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
	cfg, err := Parse("f.yaml", []byte("site: a\nfailover:\n  session_timeout: 20s\n  hold_down: 500ms\n  drain_grace: 3s\n"), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	want := Failover{SessionTimeout: 20 * time.Second, HoldDown: 500 * time.Millisecond, DrainGrace: 3 * time.Second}
	if cfg.Failover != want {
		t.Fatalf("got %+v want %+v", cfg.Failover, want)
	}
	_, err = Parse("f.yaml", []byte("site: a\nfailover:\n  hold_down: soon\n"), Overrides{})
	if err == nil || !strings.Contains(err.Error(), "f.yaml:3: failover.hold_down") {
		t.Fatalf("bad duration: %v", err)
	}
	_, err = Parse("f.yaml", []byte("site: a\nfailover:\n  holddown: 1s\n"), Overrides{})
	if err == nil || !strings.Contains(err.Error(), "f.yaml:3") || !strings.Contains(err.Error(), "hold_down") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestLogLevelOverride(t *testing.T) {
	t.Setenv(KeyEnv, key32)
	ov := Overrides{Name: "n1", Site: "a", LogLevel: "debug"}
	c, err := Parse("m.yaml", []byte("log: {level: warn}\n"), ov)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "debug" || !reflect.DeepEqual(c.Overrides, ov) {
		t.Errorf("level %q overrides %+v; want debug and %+v", c.Log.Level, c.Overrides, ov)
	}
	_, err = Parse("m.yaml", []byte("site: a\n"), Overrides{Name: "n1", LogLevel: "loud"})
	if err == nil || !strings.Contains(err.Error(), `log.level: "loud" (from --log-level) is not allowed`) {
		t.Errorf("err = %v; want the --log-level named", err)
	}
}
