package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs `meshd bench --quick`: it must start its own two
// nodes, measure every figure next to its direct baseline with zero
// errors, and print key=value lines.
func TestBenchSmoke(t *testing.T) {
	out, errOut, code := runMeshd(t, 2*time.Minute, "bench", "--quick", "--format", "kv")
	if code != 0 {
		t.Fatalf("meshd bench --quick: exit %d\n%s", code, errOut)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	for _, k := range []string{"throughput_1_mbps", "throughput_1_direct_mbps", "throughput_1_ratio",
		"latency_1_p50_us", "latency_1_p50_direct_us", "conn_rate", "conn_rate_direct",
		"idle_rss_per_conn_importer_bytes", "idle_rss_per_conn_exporter_bytes"} {
		if kv[k] == "" {
			t.Errorf("bench output lacks %s", k)
		}
	}
	if kv["errors"] != "0" {
		t.Errorf("bench errors=%q, want 0\n%s", kv["errors"], out)
	}
}
