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
	backend.Close()
	t.Logf("withdrawn after %v", waitHealth(false, 3*time.Second))
	backend, err = echo.Listen(addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	defer backend.Close()
	t.Logf("back after %v", waitHealth(true, 3*time.Second))
}
