package benchrun

import (
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/bench"
)

func TestIdleShares(t *testing.T) {
	for _, tc := range []struct {
		total, n int
		want     string
	}{{10, 3, "4 3 3"}, {100000, 6, "16667 16667 16667 16667 16666 16666"}, {5, 5, "1 1 1 1 1"}, {18000, 2, "9000 9000"}} {
		var parts []string
		sum := 0
		for _, s := range idleShares(tc.total, tc.n) {
			parts = append(parts, bench.FormatValue(int64(s)))
			sum += s
		}
		if got := strings.Join(parts, " "); got != tc.want || sum != tc.total {
			t.Errorf("idleShares(%d, %d) = %s, want %s", tc.total, tc.n, got, tc.want)
		}
	}
}

// TestSetNetnsKeys pins the documented netns key names and ratios.
func TestSetNetnsKeys(t *testing.T) {
	r := bench.NewResults()
	setNetns(r, "netns_throughput_1", "_mbps", map[string]float64{"meshd": 50, "meshd_kernel": 90, "wireguard": 100, "direct": 1000})
	setNetns(r, "netns_latency_1_p50", "_us", map[string]float64{"meshd": 300, "meshd_kernel": 200, "wireguard": 200, "direct": 20})
	want := map[string]any{
		"netns_throughput_1_mbps": 50.0, "netns_throughput_1_kernel_mbps": 90.0, "netns_throughput_1_wireguard_mbps": 100.0,
		"netns_throughput_1_direct_mbps": 1000.0, "netns_throughput_1_vs_wireguard": 0.5, "netns_throughput_1_kernel_vs_wireguard": 0.9,
		"netns_throughput_1_ratio": 0.05, "netns_throughput_1_kernel_ratio": 0.09, "netns_throughput_1_wireguard_ratio": 0.1,
		"netns_latency_1_p50_us": 300.0, "netns_latency_1_p50_wireguard_us": 200.0, "netns_latency_1_p50_vs_wireguard": 1.5,
		"netns_latency_1_p50_kernel_vs_wireguard": 1.0,
	}
	for k, v := range want {
		if got, ok := r.Get(k); !ok || got != v {
			t.Errorf("%s = %v (set %v), want %v", k, got, ok, v)
		}
	}
	if n := len(r.Keys()); n != 18 {
		t.Errorf("%d keys, want 9 per figure: %v", n, r.Keys())
	}
}

// TestRoleRSS: growth per connection is per node (whole bytes), over the
// nodes that carried connections; mean and max over those.
func TestRoleRSS(t *testing.T) {
	g := roleRSS{Role: "importer", Before: []int64{1000, 2000, 5000}, After: []int64{11000, 2500, 45007}, Carried: []int{100, 0, 200}}
	per, mean, mx, ok := g.perConn()
	if !ok || len(per) != 2 || per[0] != 100 || per[1] != 200 || mean != 150 || mx != 200 {
		t.Errorf("perConn = %v mean %v max %v ok %v; want [100 200] 150 200", per, mean, mx, ok)
	}
	if got := g.growth(); got != 10000+500+40007 {
		t.Errorf("growth = %d", got)
	}
	if _, _, _, ok := (roleRSS{Before: []int64{1}, After: []int64{9}, Carried: []int{0}}).perConn(); ok {
		t.Errorf("perConn with nothing carried: ok")
	}
}

// TestRecordRSS pins the RSS keys for one pair and for several.
func TestRecordRSS(t *testing.T) {
	quiet := func(string, ...any) {}
	one := &run{o: Options{IdleNodes: 1}, res: bench.NewResults(), progress: quiet}
	one.recordRSS(roleRSS{Role: "importer", Before: []int64{1 << 20}, After: []int64{3 << 20}, Carried: []int{1000}},
		roleRSS{Role: "exporter", Before: []int64{1 << 20}, After: []int64{2 << 20}, Carried: []int{1000}}, 1000)
	want := []string{"idle_rss_importer_before_bytes=1048576", "idle_rss_importer_after_bytes=3145728",
		"idle_rss_exporter_before_bytes=1048576", "idle_rss_exporter_after_bytes=2097152",
		"idle_rss_per_conn_importer_bytes=2097", "idle_rss_per_conn_importer_max_bytes=2097",
		"idle_rss_per_conn_exporter_bytes=1048", "idle_rss_per_conn_exporter_max_bytes=1048",
		"idle_rss_per_conn_mesh_bytes=3145"}
	if got := kv(one.res); got != strings.Join(want, "\n") {
		t.Errorf("one pair:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}

	two := &run{o: Options{IdleNodes: 2}, res: bench.NewResults(), progress: quiet}
	two.recordRSS(roleRSS{Role: "importer", Before: []int64{0, 0}, After: []int64{1000, 3000}, Carried: []int{10, 10}},
		roleRSS{Role: "exporter", Before: []int64{0, 0}, After: []int64{500, 0}, Carried: []int{20, 0}}, 20)
	want = []string{"idle_importer_1_conns=10", "idle_importer_1_rss_growth_bytes=1000",
		"idle_importer_2_conns=10", "idle_importer_2_rss_growth_bytes=3000",
		"idle_rss_per_conn_importer_bytes=200", "idle_rss_per_conn_importer_max_bytes=300",
		"idle_exporter_1_conns=20", "idle_exporter_1_rss_growth_bytes=500",
		"idle_exporter_2_conns=0", "idle_exporter_2_rss_growth_bytes=0",
		"idle_rss_per_conn_exporter_bytes=25", "idle_rss_per_conn_exporter_max_bytes=25",
		"idle_rss_per_conn_mesh_bytes=225"}
	if got := kv(two.res); got != strings.Join(want, "\n") {
		t.Errorf("two pairs:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

func kv(r *bench.Results) string {
	var b strings.Builder
	r.WriteKV(&b)
	return strings.TrimSpace(b.String())
}

// TestAddErrs: errors are recorded under their key and summed.
func TestAddErrs(t *testing.T) {
	var lines []string
	r := &run{res: bench.NewResults(), progress: func(f string, a ...any) { lines = append(lines, f) }}
	r.addErrs("a_errors", 0, nil)
	r.addErrs("b_errors", 3, errTest("boom"))
	if r.errs != 3 || kv(r.res) != "a_errors=0\nb_errors=3" || len(lines) != 1 {
		t.Errorf("errs %d, results %q, progress %q", r.errs, kv(r.res), lines)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

func TestFirstLine(t *testing.T) {
	if got := FirstLine("mesh not ready\nlog:\n..."); got != "mesh not ready" {
		t.Errorf("FirstLine = %q", got)
	}
	if got := FirstLine("one"); got != "one" {
		t.Errorf("FirstLine = %q", got)
	}
}
