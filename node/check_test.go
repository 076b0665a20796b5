package node

import (
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
)

// TestHealthCheckWithdrawsExport: an export whose target stops answering
// its check is shown unhealthy on the other node within interval + gossip
// time, and healthy again once the target is back.
func TestHealthCheckWithdrawsExport(t *testing.T) {
	dir, err := os.MkdirTemp("", "meshd-check")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	backend, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := backend.Addr()
	ck := make([]byte, 32)
	rand.Read(ck)
	ec := testConfig(t, dir, "exp", "cloud", ck)
	ec.Exports = []config.Export{{Name: "svc", Target: addr, Weight: 1,
		Check: &config.Check{Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond}}}
	e, _ := New(ec, nil)
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ic := testConfig(t, dir, "imp", "onprem", ck)
	ic.Cluster.Join = []string{e.GossipAddr().String()}
	i, _ := New(ic, nil)
	if err := i.Start(); err != nil {
		t.Fatal(err)
	}
	defer i.Close()

	healthy := func() (bool, bool) {
		for _, s := range i.Status().Services {
			if s.Name == "svc" && len(s.Endpoints) == 1 {
				return s.Endpoints[0].Healthy, true
			}
		}
		return false, false
	}
	waitHealth := func(want bool, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			if h, ok := healthy(); ok && h == want {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("export healthy=%v not seen within %v", want, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitHealth(true, 10*time.Second)
	if v := metricValue(t, e, "meshd_export_check_failures_total", "export", "svc"); v != 0 {
		t.Errorf("meshd_export_check_failures_total{export=svc} = %v while the checks pass", v)
	}
	backend.Close()
	t.Logf("withdrawn after %v", waitHealth(false, 3*time.Second))
	// The exporter's metrics say why (README "Metrics").
	if v := metricValue(t, e, "meshd_export_check_failures_total", "export", "svc"); v < 1 {
		t.Errorf("meshd_export_check_failures_total{export=svc} = %v after a failed check", v)
	}
	if v := metricValue(t, e, "meshd_export_healthy", "export", "svc"); v != 0 {
		t.Errorf("meshd_export_healthy{export=svc} = %v while withdrawn", v)
	}
	backend, err = echo.Listen(addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	defer backend.Close()
	t.Logf("back after %v", waitHealth(true, 3*time.Second))
}

// metricValue gathers n's registry and returns the value of the counter
// or gauge name{labels} (-1 if absent).
func metricValue(t *testing.T, n *Node, name string, labels ...string) float64 {
	t.Helper()
	fams, err := n.metrics.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
