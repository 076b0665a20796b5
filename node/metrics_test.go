package node

import (
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/version"
)

// TestMetricsEndpoint: metrics.listen serves Prometheus text with the
// node's series.
func TestMetricsEndpoint(t *testing.T) {
	dir, err := os.MkdirTemp("", "meshd-metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ck := make([]byte, 32)
	rand.Read(ck)
	cfg := testConfig(t, dir, "m", "onprem", ck)
	cfg.Metrics.Listen = "127.0.0.1:0"
	n, _ := New(cfg, nil)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`meshd_node_info{node="m",site="onprem",version="` + version.Get().Short() + `"} 1`, `meshd_peers{state="alive"} 0`,
		`meshd_peer_transitions_total{site="onprem",to="down"} 0`, `meshd_gossip_members 1`, `meshd_relay_connected 0`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestMetricsServerBoundsConnections: connections beyond the cap are
// closed at once, and a connection that never sends a request is closed
// after the header timeout (SPEC §9).
func TestMetricsServerBoundsConnections(t *testing.T) {
	dir := t.TempDir()
	ck := make([]byte, 32)
	rand.Read(ck)
	cfg := testConfig(t, dir, "m", "onprem", ck)
	cfg.Metrics.Listen = "127.0.0.1:0"
	n, _ := New(cfg, nil)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	const extra = 10
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < metricsMaxConns+extra; i++ {
		c, err := net.Dial("tcp", n.MetricsAddr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	closed := func(c net.Conn, within time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(within))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF || err != nil && !isTimeout(err)
	}
	shut := 0
	for _, c := range conns {
		if closed(c, 20*time.Millisecond) {
			shut++
		}
	}
	if shut != extra {
		t.Fatalf("%d of %d connections closed at once, want the %d beyond the cap", shut, len(conns), extra)
	}
	// The server still answers once the silent ones are gone.
	deadline := time.Now().Add(metricsReadHeaderTimeout + 3*time.Second)
	for _, c := range conns {
		if !closed(c, time.Until(deadline)) {
			t.Fatalf("a silent connection is still open %v after it was opened", metricsReadHeaderTimeout+3*time.Second)
		}
	}
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d after the flood", resp.StatusCode)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
