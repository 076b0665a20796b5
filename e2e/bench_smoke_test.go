package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// parseKV parses `meshd bench --format kv` output.
func parseKV(out string) map[string]string {
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// TestBenchSmoke runs `meshd bench --quick`: it must start its own two
// nodes, measure every figure next to its direct baseline with zero
// errors, and print key=value lines.
func TestBenchSmoke(t *testing.T) {
	out, errOut, code := runMeshd(t, 2*time.Minute, "bench", "--quick", "--format", "kv")
	if code != 0 {
		t.Fatalf("meshd bench --quick: exit %d\n%s", code, errOut)
	}
	kv := parseKV(out)
	for _, k := range []string{"throughput_1_mbps", "throughput_1_direct_mbps", "throughput_1_ratio",
		"latency_1_p50_us", "latency_1_p50_direct_us", "conn_rate", "conn_rate_direct",
		"idle_rss_per_conn_importer_bytes", "idle_rss_per_conn_exporter_bytes", "idle_setup_ms"} {
		if kv[k] == "" {
			t.Errorf("bench output lacks %s", k)
		}
	}
	if kv["idle_conns"] != "100" || kv["idle_backend_conns"] != "100" {
		t.Errorf("idle_conns=%q idle_backend_conns=%q, want 100 each", kv["idle_conns"], kv["idle_backend_conns"])
	}
	if kv["errors"] != "0" {
		t.Errorf("bench errors=%q, want 0\n%s", kv["errors"], out)
	}
}

// TestBenchIdleNodesSmoke spreads idle connections over 2 importers and 2
// exporters through client and backend worker processes: every
// connection established and verified twice, every node's share and RSS
// growth reported, nothing left running.
func TestBenchIdleNodesSmoke(t *testing.T) {
	out, errOut, code := runMeshd(t, 2*time.Minute, "bench", "--only", "idle", "--idle-nodes", "2", "--idle", "200",
		"--idle-hold", "500ms", "--format", "kv")
	if code != 0 {
		t.Fatalf("meshd bench --only idle --idle-nodes 2: exit %d\n%s", code, errOut)
	}
	kv := parseKV(out)
	want := map[string]string{"idle_nodes": "2", "idle_conns": "200", "idle_backend_conns": "200",
		"idle_importer_1_conns": "100", "idle_importer_2_conns": "100", "idle_open_errors": "0",
		"idle_verify1_errors": "0", "idle_verify2_errors": "0", "errors": "0"}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("%s=%q, want %q", k, kv[k], v)
		}
	}
	for _, k := range []string{"idle_exporter_1_conns", "idle_exporter_2_conns", "idle_rss_per_conn_importer_max_bytes",
		"idle_rss_per_conn_exporter_max_bytes", "idle_rss_per_conn_mesh_bytes"} {
		if kv[k] == "" {
			t.Errorf("bench output lacks %s", k)
		}
	}
	if _, ok := kv["throughput_1_mbps"]; ok {
		t.Errorf("--only idle measured throughput")
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}
}

// TestBenchFlags: bad flag values are one line on stderr and exit 2.
func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--idle-nodes", "0"},
		{"--idle-nodes", "3", "--idle", "2"},
		{"--loopback=false"},
		{"--only", "nope"},
	} {
		_, errOut, code := runMeshd(t, 30*time.Second, append([]string{"bench"}, args...)...)
		if code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("meshd bench %s: exit %d, stderr %q; want exit 2 and one line", strings.Join(args, " "), code, errOut)
		}
	}
}

// TestBenchNetnsSmoke runs `meshd bench --netns --quick` without the
// loopback part: direct, plain wireguard-go on kernel TUN devices, meshd
// userspace and kernel mode between two namespaces, all figures present
// with zero errors, and no namespace of the run left behind.
func TestBenchNetnsSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bench --netns: needs root (network namespaces, veth, TUN); run as root to include it")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("bench --netns: ip not installed (apt-get install iproute2): %v", err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("bench --netns: no /dev/net/tun: %v", err)
	}
	before := benchNamespaces(t)
	out, errOut, code := runMeshd(t, 2*time.Minute, "bench", "--quick", "--netns", "--loopback=false", "--format", "kv")
	if code != 0 {
		t.Fatalf("meshd bench --netns --quick: exit %d\n%s", code, errOut)
	}
	kv := parseKV(out)
	for _, base := range []string{"netns_throughput_1", "netns_throughput_8", "netns_latency_1_p50", "netns_latency_16_p99", "netns_conn_rate"} {
		unit := ""
		switch {
		case strings.Contains(base, "throughput"):
			unit = "_mbps"
		case strings.Contains(base, "latency"):
			unit = "_us"
		}
		for _, k := range []string{base + unit, base + "_kernel" + unit, base + "_wireguard" + unit, base + "_direct" + unit,
			base + "_vs_wireguard", base + "_kernel_vs_wireguard", base + "_ratio"} {
			if v := kv[k]; v == "" || v == "null" || v == "0" {
				t.Errorf("%s=%q, want a figure", k, v)
			}
		}
	}
	if kv["netns_errors"] != "0" || kv["errors"] != "0" {
		t.Errorf("netns_errors=%q errors=%q, want 0\n%s", kv["netns_errors"], kv["errors"], errOut)
	}
	if _, ok := kv["throughput_1_mbps"]; ok {
		t.Errorf("--loopback=false measured on loopback")
	}
	for ns := range benchNamespaces(t) {
		if !before[ns] {
			t.Errorf("namespace %s left behind", ns)
		}
	}
}

// benchNamespaces lists the bench's namespaces (mb-<pid>-a|b).
func benchNamespaces(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	names := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "mb-") {
			names[f[0]] = true
		}
	}
	return names
}
