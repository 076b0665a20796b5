package lab

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/cert"
	"github.com/meshd/meshd/internal/config"
)

// parse reads n.YAML() back through the node's own config loader.
func parse(t *testing.T, n Node) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), n.Name+".yaml")
	cfg, err := config.Parse(path, []byte(n.YAML()), config.Overrides{})
	if err != nil {
		t.Fatalf("config.Parse of\n%s\n: %v", n.YAML(), err)
	}
	return cfg
}

func keyFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNodeYAMLRoundTrip: every typed field comes back from the config
// loader as it was set.
func TestNodeYAMLRoundTrip(t *testing.T) {
	kf := keyFile(t)
	dir := t.TempDir()
	n := Node{
		Name: "exp-1", Site: "a", DataDir: filepath.Join(dir, "exp 1"), KeyFile: kf,
		Join:       []string{"127.0.0.1:7946", "[::1]:7000"},
		GossipBind: "127.0.0.1:7001", TunnelListen: "127.0.0.1:7002", TunnelMode: "kernel",
		RelayEnabled: true, RelayListen: "127.0.0.1:7003",
		Exports: []Export{
			{Name: "sink", Target: "127.0.0.1:9000", NoCheck: true, ProxyProtocol: "v1"},
			{Name: "echo", Target: "localhost:9001", Weight: 3, CheckInterval: 500 * time.Millisecond, CheckTimeout: 250 * time.Millisecond},
		},
		Imports: []Import{
			{Name: "sink", Listen: "127.0.0.1:9100", Sites: []string{"a", "b"}},
			{Name: "echo", Listen: "127.0.0.1:9101", Sites: []string{"a"}, Balance: config.BalanceRoundRobin, ConnectTimeout: 2 * time.Second},
		},
		Socket: filepath.Join(dir, "exp-1.sock"), MetricsListen: "127.0.0.1:9200",
		LogLevel: "warn", LogFormat: "json",
		Failover: Failover{SessionTimeout: 3 * time.Second, HoldDown: time.Second, DrainGrace: 1500 * time.Millisecond},
	}
	c := parse(t, n)
	got := []any{c.Name, c.Site, c.DataDir, c.Cluster.KeyFile, c.Cluster.Join, c.Gossip.Bind.String(), c.Tunnel.Listen.String(), c.Tunnel.Mode,
		c.Relay.Enabled, c.Relay.Listen.String(), c.Control.Socket, c.Metrics.Listen, c.Log.Level, c.Log.Format,
		c.Failover.SessionTimeout, c.Failover.HoldDown, c.Failover.DrainGrace}
	want := []any{n.Name, n.Site, n.DataDir, kf, n.Join, n.GossipBind, n.TunnelListen, "kernel",
		true, n.RelayListen, n.Socket, n.MetricsListen, "warn", "json",
		3 * time.Second, time.Second, 1500 * time.Millisecond}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsed back:\n got %v\nwant %v", got, want)
	}
	if len(c.Exports) != 2 || c.Exports[0].Name != "sink" || c.Exports[0].Target != "127.0.0.1:9000" || c.Exports[0].Check != nil || c.Exports[0].ProxyProtocol != "v1" ||
		c.Exports[1].Weight != 3 || c.Exports[1].Check == nil ||
		c.Exports[1].Check.Interval != 500*time.Millisecond || c.Exports[1].Check.Timeout != 250*time.Millisecond {
		t.Errorf("exports: %+v", c.Exports)
	}
	if len(c.Imports) != 2 || c.Imports[0].Listen.String() != "127.0.0.1:9100" || !reflect.DeepEqual(c.Imports[0].Sites, []string{"a", "b"}) ||
		c.Imports[1].Balance != config.BalanceRoundRobin || c.Imports[1].ConnectTimeout != 2*time.Second {
		t.Errorf("imports: %+v", c.Imports)
	}
}

// TestNodeYAMLIdentityLimits: the keys e2e sets beyond the bench's (pki
// with a real certificate, limits, advertise addresses, allow lists and
// per-entry caps) come back from the config loader as they were set.
func TestNodeYAMLIdentityLimits(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	caDir, outDir := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	if _, err := cert.InitCA(caDir, "lab-ca", time.Hour, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cert.SignNode(caDir, outDir, cert.Template{Name: "id-1", Site: "a", Exports: []string{"svc"}}, time.Hour, now); err != nil {
		t.Fatal(err)
	}
	fp := strings.Repeat("ab", 32)
	n := Node{
		Name: "id-1", Site: "a", DataDir: filepath.Join(dir, "data"), KeyFile: keyFile(t),
		GossipBind: "127.0.0.1:7001", GossipAdvertise: "192.0.2.1:7001",
		TunnelListen: "127.0.0.1:7002", TunnelAdvertise: "192.0.2.1:7002",
		RelayEnabled: true, RelayListen: "127.0.0.1:7003", RelayAdvertise: "192.0.2.1:7003",
		Exports: []Export{
			{Name: "svc", Target: "127.0.0.1:9000", Allow: []string{"group:ok", "node:b-1"}, MaxConns: 5},
			{Name: "none", Target: "127.0.0.1:9001", Allow: []string{}},
			{Name: "all", Target: "127.0.0.1:9002"},
		},
		Imports: []Import{{Name: "svc", Listen: "127.0.0.1:9100", MaxConns: 8, Rate: 0.5, Burst: 10}},
		PKI: PKI{CA: filepath.Join(caDir, "ca.crt"), Cert: filepath.Join(outDir, "id-1.crt"), Key: filepath.Join(outDir, "id-1.key"),
			Blocklist: []string{fp}},
		Limits: Limits{MaxStreamsPerPeer: 64, MaxPeers: 100},
	}
	c := parse(t, n)
	got := []any{c.Gossip.Advertise.String(), c.Tunnel.Advertise.String(), c.Relay.Advertise.String(),
		c.PKI.CA, c.PKI.Cert, c.PKI.Key, c.PKI.Blocklist, c.PKI.Set != nil, c.Limits.MaxStreamsPerPeer, c.Limits.MaxPeers}
	want := []any{n.GossipAdvertise, n.TunnelAdvertise, n.RelayAdvertise,
		n.PKI.CA, n.PKI.Cert, n.PKI.Key, []string{fp}, true, 64, 100}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsed back:\n got %v\nwant %v", got, want)
	}
	if len(c.Exports) != 3 || !reflect.DeepEqual(c.Exports[0].Allow, []string{"group:ok", "node:b-1"}) || c.Exports[0].MaxConns != 5 ||
		c.Exports[1].Allow == nil || len(c.Exports[1].Allow) != 0 || c.Exports[2].Allow != nil {
		t.Errorf("exports: %+v", c.Exports)
	}
	if len(c.Imports) != 1 || c.Imports[0].MaxConns != 8 || c.Imports[0].Rate != 0.5 || c.Imports[0].Burst != 10 {
		t.Errorf("imports: %+v", c.Imports)
	}
}

// TestNodeYAMLMinimal: zero fields are left out, so the defaults apply,
// and Extra is appended as is.
func TestNodeYAMLMinimal(t *testing.T) {
	n := Node{Name: "n", Site: "b", DataDir: t.TempDir(), KeyFile: keyFile(t), Extra: "relay:\n  enabled: false\n"}
	y := n.YAML()
	for _, absent := range []string{"join", "gossip", "tunnel", "exports", "imports", "control", "failover", "log", "metrics", "pki", "limits", "advertise"} {
		if strings.Contains(y, absent+":") {
			t.Errorf("%s written for a zero field:\n%s", absent, y)
		}
	}
	if !strings.HasSuffix(y, "relay:\n  enabled: false\n") {
		t.Errorf("Extra not appended:\n%s", y)
	}
	c := parse(t, n)
	if c.Tunnel.Mode != config.ModeUserspace || c.Failover.DrainGrace != 10*time.Second || c.Control.Socket != filepath.Join(n.DataDir, "meshd.sock") {
		t.Errorf("defaults: mode %q drain_grace %v socket %q", c.Tunnel.Mode, c.Failover.DrainGrace, c.Control.Socket)
	}
}

// TestScalarQuoting: strings YAML would read as something else, or not
// at all, are quoted; the rest is written plain.
func TestScalarQuoting(t *testing.T) {
	for in, want := range map[string]string{
		"exp-1":           "exp-1",
		"/tmp/a/b.sock":   "/tmp/a/b.sock",
		"127.0.0.1:7946":  "127.0.0.1:7946",
		"/tmp/with space": `"/tmp/with space"`,
		"[::1]:7946":      `"[::1]:7946"`,
		"yes":             `"yes"`,
		"null":            `"null"`,
		"1":               `"1"`,
		"0x1f":            `"0x1f"`,
		"1e3":             `"1e3"`,
		"a:":              `"a:"`,
		"# x":             `"# x"`,
		`a"b`:             `"a\"b"`,
	} {
		if got := scalar(in); got != want {
			t.Errorf("scalar(%q) = %s, want %s", in, got, want)
		}
	}
}
