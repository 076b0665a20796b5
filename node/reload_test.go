package node

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
)

// freeAddr returns a loopback TCP address that is free right now.
func freeAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return netip.MustParseAddrPort(l.Addr().String())
}

func clone(c *config.Config) *config.Config {
	n := *c
	n.Exports = append([]config.Export(nil), c.Exports...)
	n.Imports = append([]config.Import(nil), c.Imports...)
	return &n
}

// TestReloadSteps: a reload is all or nothing. A later step's error aborts
// the earlier ones (a newly bound import listener is released) and nothing
// changes; a restart-only key is refused naming the key; a good reload adds
// and removes imports and exports, a removed import's listener closes, and
// the node closes without leaking goroutines.
func TestReloadSteps(t *testing.T) {
	dir := t.TempDir()
	backend, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	baseG := runtime.NumGoroutine()

	cfg := testConfig(t, dir, "n1", "s1", make([]byte, 32))
	a1, a2 := freeAddr(t), freeAddr(t)
	cfg.Imports = []config.Import{{Name: "one", Listen: a1, Balance: config.BalanceLeastConn}}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Reload(cfg); err == nil {
		t.Fatal("Reload before Start succeeded")
	}
	fail := errors.New("hook says no")
	var hookCalls, commits int
	n.OnReload("test", func(old, c *config.Config) (func(), func(), error) {
		hookCalls++
		if len(c.Imports) == 3 {
			return nil, nil, fail
		}
		return func() { commits++ }, nil, nil
	})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	// Third import makes the hook fail: the second's listener was bound in
	// the prepare phase and must be released again.
	bad := clone(cfg)
	a3 := freeAddr(t)
	bad.Imports = append(bad.Imports,
		config.Import{Name: "two", Listen: a2, Balance: config.BalanceLeastConn},
		config.Import{Name: "three", Listen: a3, Balance: config.BalanceLeastConn})
	if err := n.Reload(bad); !errors.Is(err, fail) {
		t.Fatalf("Reload = %v; want the hook's error", err)
	}
	for _, a := range []netip.AddrPort{a2, a3} {
		l, err := net.Listen("tcp", a.String())
		if err != nil {
			t.Fatalf("%s still bound after an aborted reload: %v", a, err)
		}
		l.Close()
	}
	if n.ImportAddr("two") != "" || n.Config() != cfg || commits != 0 {
		t.Fatalf("aborted reload changed something: import two %q, config replaced %v, commits %d", n.ImportAddr("two"), n.Config() != cfg, commits)
	}

	site := clone(cfg)
	site.Site = "s2"
	if err := n.Reload(site); err == nil || !strings.Contains(err.Error(), "site: changed from \"s1\" to \"s2\"") {
		t.Fatalf("site change: %v", err)
	}

	good := clone(cfg)
	good.Imports = []config.Import{{Name: "echo", Listen: a2, Balance: config.BalanceRoundRobin}}
	good.Exports = []config.Export{{Name: "echo", Target: backend.Addr(), Weight: 3,
		Check: &config.Check{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}}}
	if err := n.Reload(good); err != nil {
		t.Fatal(err)
	}
	if commits != 1 || n.Config() != good {
		t.Fatalf("commits %d, config in force replaced %v", commits, n.Config() == good)
	}
	if _, err := net.DialTimeout("tcp", a1.String(), time.Second); err == nil {
		t.Errorf("removed import still accepts on %s", a1)
	}
	if n.ImportAddr("echo") != a2.String() {
		t.Errorf("import echo at %q; want %s", n.ImportAddr("echo"), a2)
	}
	st := n.Status()
	if len(st.Services) != 1 || st.Services[0].Name != "echo" || !st.Services[0].Endpoints[0].Healthy {
		t.Errorf("catalog after reload: %+v", st.Services)
	}
	// Through the local export: the new import reaches the backend.
	c, err := net.DialTimeout("tcp", a2.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo through the new import: %q %v", buf, err)
	}
	c.Close()

	// Maintenance survives a reload; check: false keeps the export healthy.
	n.SetMaintenance(true, "test")
	off := clone(good)
	off.Exports[0].Check = nil
	off.Exports[0].Target = "127.0.0.1:1" // nothing listens: only a check would notice
	if err := n.Reload(off); err != nil {
		t.Fatal(err)
	}
	if on, reason, _ := n.Maintenance(); !on || reason != "test" {
		t.Errorf("maintenance after reload: %v %q", on, reason)
	}
	if st := n.Status(); st.Services[0].Endpoints[0].Healthy {
		t.Errorf("local endpoint healthy during maintenance")
	}
	n.SetMaintenance(false, "")
	time.Sleep(300 * time.Millisecond) // a few check intervals of the old config
	if st := n.Status(); !st.Services[0].Endpoints[0].Healthy {
		t.Errorf("export with check: false unhealthy: %+v", st.Services[0])
	}

	n.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseG+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines %d (base %d)\n%s", runtime.NumGoroutine(), baseG, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRestartOnlyKeys: every key a running node cannot change is refused by
// a reload with an error naming it (SPEC §10), and a config that changes
// only live keys passes this step.
func TestRestartOnlyKeys(t *testing.T) {
	base := &config.Config{Name: "n1", Site: "s1", DataDir: "/d",
		Gossip:   config.Gossip{Bind: netip.MustParseAddrPort("127.0.0.1:7946")},
		Tunnel:   config.Tunnel{Listen: netip.MustParseAddrPort("127.0.0.1:51820"), Mode: config.ModeUserspace},
		Relay:    config.Relay{Listen: netip.MustParseAddrPort("127.0.0.1:7947")},
		Failover: config.Failover{SessionTimeout: 15 * time.Second, HoldDown: 2 * time.Second, DrainGrace: 10 * time.Second},
		Log:      config.Log{Level: "info", Format: "text"}}
	ap := netip.MustParseAddrPort("10.0.0.1:1")
	for _, tc := range []struct {
		key  string
		edit func(c *config.Config)
	}{
		{"name", func(c *config.Config) { c.Name = "n2" }},
		{"site", func(c *config.Config) { c.Site = "s2" }},
		{"data_dir", func(c *config.Config) { c.DataDir = "/e" }},
		{"gossip.bind", func(c *config.Config) { c.Gossip.Bind = ap }},
		{"gossip.advertise", func(c *config.Config) { c.Gossip.Advertise = ap }},
		{"tunnel.listen", func(c *config.Config) { c.Tunnel.Listen = ap }},
		{"tunnel.advertise", func(c *config.Config) { c.Tunnel.Advertise = ap }},
		{"tunnel.mode", func(c *config.Config) { c.Tunnel.Mode = config.ModeKernel }},
		{"relay.enabled", func(c *config.Config) { c.Relay.Enabled = true }},
		{"relay.listen", func(c *config.Config) { c.Relay.Listen = ap }},
		{"relay.advertise", func(c *config.Config) { c.Relay.Advertise = ap }},
		{"control.socket", func(c *config.Config) { c.Control.Socket = "/s.sock" }},
		{"metrics.listen", func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:9469" }},
		{"log.format", func(c *config.Config) { c.Log.Format = "json" }},
		{"failover.session_timeout", func(c *config.Config) { c.Failover.SessionTimeout = time.Minute }},
		{"failover.hold_down", func(c *config.Config) { c.Failover.HoldDown = time.Second }},
		{"", func(c *config.Config) { // live keys only
			c.Log.Level = "debug"
			c.Failover.DrainGrace = time.Minute
			c.Exports = []config.Export{{Name: "x", Target: "127.0.0.1:1", Weight: 2}}
		}},
	} {
		next := clone(base)
		tc.edit(next)
		commit, abort, err := restartOnly(base, next)
		if commit != nil || abort != nil {
			t.Errorf("%s: restartOnly returned a commit or abort; it only checks", tc.key)
		}
		var re *RestartError
		switch {
		case tc.key == "" && err != nil:
			t.Errorf("live keys only: %v; want nil", err)
		case tc.key != "" && (!errors.As(err, &re) || re.Key != tc.key || !strings.HasPrefix(err.Error(), tc.key+": changed from ")):
			t.Errorf("%s changed: %v; want a RestartError naming %s", tc.key, err, tc.key)
		}
	}
}
