package main

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
			parts = append(parts, itoa(s))
			sum += s
		}
		if got := strings.Join(parts, " "); got != tc.want || sum != tc.total {
			t.Errorf("idleShares(%d, %d) = %s, want %s", tc.total, tc.n, got, tc.want)
		}
	}
}

func itoa(i int) string { return bench.FormatValue(int64(i)) }

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
