package node

import (
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
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
	for _, want := range []string{`meshd_node_info{node="m",site="onprem"} 1`, `meshd_peers{state="alive"} 0`, "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
