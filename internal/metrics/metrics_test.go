package metrics

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func testSample() Sample {
	return Sample{
		Peers: []PeerSample{
			{Name: "cloud-1", Site: "cloud", State: "alive", Path: "direct", Session: true, RTT: 12500 * time.Microsecond,
				Streams: 3, TxBytes: 1000, RxBytes: 2000, Usable: true, SessionState: "up"},
			{Name: "cloud-2", Site: "cloud", State: "suspect", Path: "relay", Session: true, RTT: 40 * time.Millisecond,
				Streams: 1, TxBytes: 10, RxBytes: 20, Usable: false, SessionState: "up"},
			{Name: "edge-1", Site: "edge", State: "dead", Path: "none", Session: true, SessionState: "down"},
			// No session: counted in the aggregates, no per-peer series.
			{Name: "edge-2", Site: "edge", State: "alive", Path: "none", Usable: true, SessionState: "idle"},
			// Duplicate: ignored, first one wins.
			{Name: "cloud-1", Site: "other", State: "dead", Path: "none", Session: true, Streams: 99},
		},
		Imports: []ImportSample{
			{Name: "postgres", Active: 2, Total: 10, Failed: 3, Limited: 4},
			{Name: "weird", Active: 0, Total: 1, Failed: 5}, // failed > total must not underflow
		},
		Exports: []ExportSample{
			{Name: "postgres", Healthy: true, Active: 4, Served: 42},
			{Name: "redis", Healthy: false, Active: 0, Served: 7, CheckFailures: 3},
		},
		Gossip: GossipSample{Members: 5, HealthScore: 1, Queued: 2, Malformed: 4},
		Relay: RelaySample{Connected: true, Sent: 11, Received: 12, Dropped: 1,
			ServerClients: 3, ServerAccepted: 4, ServerAuthFailures: 5, ServerForwarded: 6,
			ServerForwardedBytes: 700, ServerDropped: 8, ServerNoRoute: 9},
	}
}

func info(node, site string) Info { return Info{Node: node, Site: site, Version: "v1.2.3"} }

// scrape GETs /metrics from h and parses the text exposition.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain") // force the text format
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// find returns the series of family name whose labels are exactly lbls.
func find(fams map[string]*dto.MetricFamily, name string, lbls map[string]string) (*dto.MetricFamily, *dto.Metric) {
	f := fams[name]
	if f == nil {
		return nil, nil
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(lbls) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := lbls[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		return f, m
	}
	return f, nil
}

func value(f *dto.MetricFamily, m *dto.Metric) float64 {
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	}
	return m.GetUntyped().GetValue()
}

type want struct {
	name   string
	labels map[string]string
	typ    dto.MetricType
	value  float64
}

func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

const (
	gauge   = dto.MetricType_GAUGE
	counter = dto.MetricType_COUNTER
)

func check(t *testing.T, fams map[string]*dto.MetricFamily, ws []want) {
	t.Helper()
	for _, w := range ws {
		f, m := find(fams, w.name, w.labels)
		if m == nil {
			t.Errorf("missing %s%v", w.name, w.labels)
			continue
		}
		if f.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", w.name, f.GetType(), w.typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s: no help", w.name)
		}
		if got := value(f, m); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
}

func absent(t *testing.T, fams map[string]*dto.MetricFamily, name string, lbls map[string]string) {
	t.Helper()
	if lbls == nil {
		if fams[name] != nil {
			t.Errorf("%s present, want absent", name)
		}
		return
	}
	if _, m := find(fams, name, lbls); m != nil {
		t.Errorf("%s%v present, want absent", name, lbls)
	}
}

func count(fams map[string]*dto.MetricFamily, name string) int {
	return len(fams[name].GetMetric())
}

func TestScrapeState(t *testing.T) {
	m := New(info("onprem-1", "onprem"), testSample)
	fams := scrape(t, m.Handler())

	check(t, fams, []want{
		{"meshd_node_info", l("node", "onprem-1", "site", "onprem", "version", "v1.2.3"), gauge, 1},

		{"meshd_gossip_members", l(), gauge, 5},
		{"meshd_gossip_health_score", l(), gauge, 1},
		{"meshd_gossip_broadcasts_queued", l(), gauge, 2},
		{"meshd_gossip_malformed_messages_total", l(), counter, 4},

		{"meshd_peers", l("state", "alive"), gauge, 2},
		{"meshd_peers", l("state", "suspect"), gauge, 1},
		{"meshd_peers", l("state", "dead"), gauge, 1},
		{"meshd_peers", l("state", "left"), gauge, 0},
		{"meshd_peers_by_path", l("path", "direct"), gauge, 1},
		{"meshd_peers_by_path", l("path", "relay"), gauge, 1},
		{"meshd_peers_by_path", l("path", "none"), gauge, 2},
		{"meshd_sessions", l("state", "up"), gauge, 2},
		{"meshd_sessions", l("state", "idle"), gauge, 1},
		{"meshd_sessions", l("state", "down"), gauge, 1},

		{"meshd_peer_up", l("peer", "cloud-1", "site", "cloud"), gauge, 1},
		{"meshd_peer_up", l("peer", "cloud-2", "site", "cloud"), gauge, 0},
		{"meshd_peer_up", l("peer", "edge-1", "site", "edge"), gauge, 0},

		// Every path 0/1 for every peer with a session.
		{"meshd_peer_path", l("peer", "cloud-1", "site", "cloud", "path", "direct"), gauge, 1},
		{"meshd_peer_path", l("peer", "cloud-1", "site", "cloud", "path", "relay"), gauge, 0},
		{"meshd_peer_path", l("peer", "cloud-1", "site", "cloud", "path", "none"), gauge, 0},
		{"meshd_peer_path", l("peer", "cloud-2", "site", "cloud", "path", "direct"), gauge, 0},
		{"meshd_peer_path", l("peer", "cloud-2", "site", "cloud", "path", "relay"), gauge, 1},
		{"meshd_peer_path", l("peer", "edge-1", "site", "edge", "path", "none"), gauge, 1},

		{"meshd_peer_rtt_seconds", l("peer", "cloud-1", "site", "cloud"), gauge, 0.0125},
		{"meshd_peer_rtt_seconds", l("peer", "cloud-2", "site", "cloud"), gauge, 0.04},

		{"meshd_peer_streams", l("peer", "cloud-1", "site", "cloud"), gauge, 3},
		{"meshd_peer_streams", l("peer", "edge-1", "site", "edge"), gauge, 0},

		{"meshd_peer_transmit_bytes_total", l("peer", "cloud-1", "site", "cloud"), counter, 1000},
		{"meshd_peer_receive_bytes_total", l("peer", "cloud-1", "site", "cloud"), counter, 2000},
		{"meshd_peer_transmit_bytes_total", l("peer", "cloud-2", "site", "cloud"), counter, 10},
		{"meshd_peer_receive_bytes_total", l("peer", "cloud-2", "site", "cloud"), counter, 20},

		{"meshd_import_connections_active", l("import", "postgres"), gauge, 2},
		{"meshd_import_connections_total", l("import", "postgres", "result", "ok"), counter, 7},
		{"meshd_import_connections_total", l("import", "postgres", "result", "failed"), counter, 3},
		{"meshd_import_connections_total", l("import", "weird", "result", "ok"), counter, 0},
		{"meshd_import_connections_total", l("import", "weird", "result", "failed"), counter, 5},
		{"meshd_import_connections_total", l("import", "postgres", "result", "limited"), counter, 4},
		{"meshd_import_connections_total", l("import", "weird", "result", "limited"), counter, 0},

		{"meshd_export_healthy", l("export", "postgres"), gauge, 1},
		{"meshd_export_healthy", l("export", "redis"), gauge, 0},
		{"meshd_export_streams_active", l("export", "postgres"), gauge, 4},
		{"meshd_export_streams_total", l("export", "postgres"), counter, 42},
		{"meshd_export_streams_total", l("export", "redis"), counter, 7},
		{"meshd_export_check_failures_total", l("export", "postgres"), counter, 0},
		{"meshd_export_check_failures_total", l("export", "redis"), counter, 3},

		{"meshd_relay_connected", l(), gauge, 1},
		{"meshd_relay_client_packets_total", l("kind", "sent"), counter, 11},
		{"meshd_relay_client_packets_total", l("kind", "received"), counter, 12},
		{"meshd_relay_client_packets_total", l("kind", "dropped"), counter, 1},
		{"meshd_relay_server_clients", l(), gauge, 3},
		{"meshd_relay_server_connections_total", l(), counter, 4},
		{"meshd_relay_server_auth_failures_total", l(), counter, 5},
		{"meshd_relay_server_packets_total", l("result", "forwarded"), counter, 6},
		{"meshd_relay_server_packets_total", l("result", "dropped"), counter, 8},
		{"meshd_relay_server_packets_total", l("result", "no_route"), counter, 9},
		{"meshd_relay_server_forwarded_bytes_total", l(), counter, 700},

		// Event counters exist at 0 before any event: per import, per site.
		{"meshd_failovers_total", l("service", "postgres"), counter, 0},
		{"meshd_failovers_total", l("service", "weird"), counter, 0},
		{"meshd_peer_transitions_total", l("site", "onprem", "to", "down"), counter, 0},
		{"meshd_peer_transitions_total", l("site", "cloud", "to", "up"), counter, 0},
		{"meshd_peer_transitions_total", l("site", "edge", "to", "down"), counter, 0},
		{"meshd_drills_total", l("site", "cloud", "result", "ok"), counter, 0},
		{"meshd_drills_total", l("site", "edge", "result", "failed"), counter, 0},
	})
	if f, m := find(fams, "meshd_import_connect_seconds", l("import", "postgres")); m == nil || f.GetType() != dto.MetricType_HISTOGRAM ||
		m.GetHistogram().GetSampleCount() != 0 {
		t.Errorf("meshd_import_connect_seconds{import=postgres}: want an empty histogram, got %v", m)
	}

	// Exact series counts: the duplicate peer is dropped, the peer without
	// a session has no per-peer series, unknown RTT omitted, no drills of
	// this node's own site.
	for name, n := range map[string]int{
		"meshd_node_info":                 1,
		"meshd_peers":                     4,
		"meshd_peers_by_path":             3,
		"meshd_sessions":                  3,
		"meshd_peer_up":                   3,
		"meshd_peer_path":                 9,
		"meshd_peer_rtt_seconds":          2,
		"meshd_peer_streams":              3,
		"meshd_peer_transmit_bytes_total": 3,
		"meshd_import_connections_total":  8,
		"meshd_import_connect_seconds":    2,
		"meshd_export_streams_total":      2,
		"meshd_peer_transitions_total":    6,
		"meshd_drills_total":              4,
	} {
		if got := count(fams, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
	absent(t, fams, "meshd_peer_rtt_seconds", l("peer", "edge-1", "site", "edge"))
	absent(t, fams, "meshd_peer_up", l("peer", "edge-2", "site", "edge"))
	absent(t, fams, "meshd_drills_total", l("site", "onprem", "result", "ok"))

	// No drill yet, no runtime collectors.
	for _, name := range []string{"meshd_drill_rto_seconds", "meshd_drill_failback_seconds", "go_goroutines", "process_start_time_seconds"} {
		absent(t, fams, name, nil)
	}
	for name := range fams {
		if !strings.HasPrefix(name, "meshd_") {
			t.Errorf("unexpected family %s", name)
		}
	}
}

// TestFreshNodeHasEveryCounter: a node with no peers, imports or exports
// still serves every fixed family, counters at 0.
func TestFreshNodeHasEveryCounter(t *testing.T) {
	fams := scrape(t, New(info("n", "s"), nil).Handler())
	check(t, fams, []want{
		{"meshd_peer_transitions_total", l("site", "s", "to", "down"), counter, 0},
		{"meshd_peer_transitions_total", l("site", "s", "to", "up"), counter, 0},
		{"meshd_gossip_malformed_messages_total", l(), counter, 0},
		{"meshd_relay_client_packets_total", l("kind", "dropped"), counter, 0},
		{"meshd_relay_server_packets_total", l("result", "no_route"), counter, 0},
		{"meshd_peers_by_path", l("path", "relay"), gauge, 0},
		{"meshd_limit_refused_total", l("limit", "max_streams_per_peer"), counter, 0},
		{"meshd_limit_refused_total", l("limit", "export_max_conns"), counter, 0},
		{"meshd_limit_sessions_reset_total", l(), counter, 0},
		{"meshd_limit_peers_left_out", l(), gauge, 0},
		{"meshd_unauthenticated_refused_total", l("listener", "gossip_tcp"), counter, 0},
		{"meshd_unauthenticated_refused_total", l("listener", "gossip_udp"), counter, 0},
		{"meshd_unauthenticated_refused_total", l("listener", "relay"), counter, 0},
		{"meshd_unauthenticated_refused_total", l("listener", "http"), counter, 0},
	})
}

// TestLimitSeries: the limit counters of a sample are exported by name.
func TestLimitSeries(t *testing.T) {
	m := New(info("n", "s"), func() Sample {
		return Sample{Limits: LimitSample{StreamsRefused: 1, ExportRefused: 2, SessionsReset: 3, PeersLeftOut: 4,
			GossipStreams: 5, GossipPackets: 6, RelayConns: 7, HTTPConns: 8}}
	})
	check(t, scrape(t, m.Handler()), []want{
		{"meshd_limit_refused_total", l("limit", "max_streams_per_peer"), counter, 1},
		{"meshd_limit_refused_total", l("limit", "export_max_conns"), counter, 2},
		{"meshd_limit_sessions_reset_total", l(), counter, 3},
		{"meshd_limit_peers_left_out", l(), gauge, 4},
		{"meshd_unauthenticated_refused_total", l("listener", "gossip_tcp"), counter, 5},
		{"meshd_unauthenticated_refused_total", l("listener", "gossip_udp"), counter, 6},
		{"meshd_unauthenticated_refused_total", l("listener", "relay"), counter, 7},
		{"meshd_unauthenticated_refused_total", l("listener", "http"), counter, 8},
	})
}

func TestEmptyAndNilSample(t *testing.T) {
	for _, fn := range []func() Sample{nil, func() Sample { return Sample{} }} {
		m := New(info("n", "s"), fn)
		fams := scrape(t, m.Handler())
		check(t, fams, []want{
			{"meshd_node_info", l("node", "n", "site", "s", "version", "v1.2.3"), gauge, 1},
			{"meshd_peers", l("state", "alive"), gauge, 0},
			{"meshd_peers", l("state", "suspect"), gauge, 0},
			{"meshd_peers", l("state", "dead"), gauge, 0},
			{"meshd_peers", l("state", "left"), gauge, 0},
		})
		absent(t, fams, "meshd_peer_up", nil)
		absent(t, fams, "meshd_import_connections_total", nil)
	}
}

func TestSampleReadAtScrapeTime(t *testing.T) {
	var calls atomic.Int64
	m := New(info("n", "s"), func() Sample {
		c := calls.Add(1)
		return Sample{Exports: []ExportSample{{Name: "x", Healthy: c%2 == 1, Served: uint64(c * 10)}}}
	})
	if calls.Load() != 0 {
		t.Fatalf("sample called %d times before any scrape", calls.Load())
	}
	check(t, scrape(t, m.Handler()), []want{
		{"meshd_export_healthy", l("export", "x"), gauge, 1},
		{"meshd_export_streams_total", l("export", "x"), counter, 10},
	})
	check(t, scrape(t, m.Handler()), []want{
		{"meshd_export_healthy", l("export", "x"), gauge, 0},
		{"meshd_export_streams_total", l("export", "x"), counter, 20},
	})
}

func TestEvents(t *testing.T) {
	m := New(info("n", "s"), nil)
	m.Failover("postgres", "a", "b")
	m.Failover("postgres", "a", "c")
	m.Failover("redis", "a", "b")
	m.PeerTransition("cloud-1", "cloud", "down")
	m.PeerTransition("cloud-1", "cloud", "up")
	m.PeerTransition("cloud-2", "cloud", "down")
	m.ImportConnected("postgres", 3*time.Millisecond)
	m.ImportConnected("postgres", 2*time.Second)

	m.Drill("cloud", []DrillService{
		{Name: "postgres", RTO: 1500 * time.Millisecond, Failback: 4 * time.Second},
		{Name: "redis", RTO: time.Second, Failback: 2 * time.Second},
	})
	m.Drill("edge", []DrillService{{Name: "postgres", Failed: 2, RTO: time.Second, Failback: time.Second}}) // failed probes
	fams := scrape(t, m.Handler())
	check(t, fams, []want{
		{"meshd_failovers_total", l("service", "postgres"), counter, 2},
		{"meshd_failovers_total", l("service", "redis"), counter, 1},
		{"meshd_peer_transitions_total", l("site", "cloud", "to", "down"), counter, 2},
		{"meshd_peer_transitions_total", l("site", "cloud", "to", "up"), counter, 1},
		{"meshd_drills_total", l("site", "cloud", "result", "ok"), counter, 1},
		{"meshd_drills_total", l("site", "edge", "result", "failed"), counter, 1},
		{"meshd_drill_rto_seconds", l("site", "cloud", "service", "postgres"), gauge, 1.5},
		{"meshd_drill_failback_seconds", l("site", "cloud", "service", "postgres"), gauge, 4},
		{"meshd_drill_rto_seconds", l("site", "cloud", "service", "redis"), gauge, 1},
	})
	absent(t, fams, "meshd_drills_total", l("site", "cloud", "result", "failed"))
	_, h := find(fams, "meshd_import_connect_seconds", l("import", "postgres"))
	if h == nil || h.GetHistogram().GetSampleCount() != 2 || h.GetHistogram().GetSampleSum() < 2.003-1e-9 {
		t.Fatalf("connect histogram: %v", h)
	}
	for _, b := range h.GetHistogram().GetBucket() {
		want := uint64(0)
		switch {
		case b.GetUpperBound() >= 2.5:
			want = 2
		case b.GetUpperBound() >= 0.005:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}

	// A drill where one service never recovered: failed, and its
	// last-drill gauges are removed rather than left stale; a service that
	// recovered but never failed back is fine, its failback absent.
	m.Drill("cloud", []DrillService{
		{Name: "postgres", RTO: -1, Failback: -1},
		{Name: "redis", RTO: 2 * time.Second, Failback: -1},
	})
	fams = scrape(t, m.Handler())
	check(t, fams, []want{
		{"meshd_drills_total", l("site", "cloud", "result", "ok"), counter, 1},
		{"meshd_drills_total", l("site", "cloud", "result", "failed"), counter, 1},
		{"meshd_drill_rto_seconds", l("site", "cloud", "service", "redis"), gauge, 2},
	})
	absent(t, fams, "meshd_drill_rto_seconds", l("site", "cloud", "service", "postgres"))
	absent(t, fams, "meshd_drill_failback_seconds", l("site", "cloud", "service", "postgres"))
	absent(t, fams, "meshd_drill_failback_seconds", l("site", "cloud", "service", "redis"))
}

func TestTwoInstances(t *testing.T) {
	a := New(info("a", "onprem"), func() Sample {
		return Sample{Peers: []PeerSample{{Name: "b", Site: "cloud", State: "alive", Path: "direct", Session: true, Usable: true}}}
	})
	b := New(info("b", "cloud"), func() Sample {
		return Sample{Peers: []PeerSample{{Name: "a", Site: "onprem", State: "suspect", Path: "relay", Session: true}}}
	})
	if a.Registry() == b.Registry() {
		t.Fatal("instances share a registry")
	}
	// Runtime collectors on both, twice: per-registry, idempotent, no panic.
	a.WithRuntime().WithRuntime()
	b.WithRuntime()
	a.Failover("svc", "x", "y")
	b.PeerTransition("a", "onprem", "down")

	fa, fb := scrape(t, a.Handler()), scrape(t, b.Handler())
	check(t, fa, []want{
		{"meshd_node_info", l("node", "a", "site", "onprem", "version", "v1.2.3"), gauge, 1},
		{"meshd_peer_up", l("peer", "b", "site", "cloud"), gauge, 1},
		{"meshd_peers", l("state", "alive"), gauge, 1},
		{"meshd_failovers_total", l("service", "svc"), counter, 1},
		{"meshd_peer_transitions_total", l("site", "cloud", "to", "down"), counter, 0},
	})
	check(t, fb, []want{
		{"meshd_node_info", l("node", "b", "site", "cloud", "version", "v1.2.3"), gauge, 1},
		{"meshd_peer_up", l("peer", "a", "site", "onprem"), gauge, 0},
		{"meshd_peers", l("state", "suspect"), gauge, 1},
		{"meshd_peer_transitions_total", l("site", "onprem", "to", "down"), counter, 1},
	})
	for _, f := range []map[string]*dto.MetricFamily{fa, fb} {
		if count(f, "meshd_node_info") != 1 || count(f, "meshd_peer_up") != 1 {
			t.Errorf("cross-talk between instances")
		}
		if f["go_goroutines"] == nil {
			t.Errorf("go collector missing after WithRuntime")
		}
	}
	absent(t, fb, "meshd_failovers_total", nil)
}

func TestLint(t *testing.T) {
	m := New(info("n", "s"), testSample).WithRuntime()
	m.Failover("svc", "a", "b")
	m.PeerTransition("p", "cloud", "down")
	m.ImportConnected("postgres", time.Millisecond)
	m.Drill("site", []DrillService{{Name: "svc", RTO: time.Second, Failback: 2 * time.Second}, {Name: "svc2", Failed: 1, RTO: -1, Failback: -1}})
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestInvalidLabelValuesDoNotPanic(t *testing.T) {
	bad := string([]byte{0xff, 0xfe})
	m := New(info("n", "s"), func() Sample {
		return Sample{
			Peers:   []PeerSample{{Name: bad, Site: bad, State: "alive", Session: true}, {Name: "good", State: "alive", Session: true, Usable: true}},
			Imports: []ImportSample{{Name: bad}},
			Exports: []ExportSample{{Name: bad}},
		}
	})
	m.Failover(bad, "a", "b")
	m.PeerTransition(bad, bad, "down")
	m.ImportConnected(bad, time.Second)
	m.Drill(bad, []DrillService{{Name: "svc", RTO: time.Second, Failback: time.Second}})
	// ContinueOnError: the scrape still serves the valid series.
	fams := scrape(t, m.Handler())
	check(t, fams, []want{
		{"meshd_peer_up", l("peer", "good", "site", ""), gauge, 1},
		{"meshd_peers", l("state", "alive"), gauge, 2},
	})
}

func TestConcurrentScrapesAndEvents(t *testing.T) {
	var mu sync.Mutex
	served := uint64(0)
	m := New(info("n", "s"), func() Sample {
		mu.Lock()
		defer mu.Unlock()
		served++
		return Sample{Exports: []ExportSample{{Name: "x", Served: served}}, Imports: []ImportSample{{Name: "svc"}}}
	})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				resp, err := http.Get(srv.URL)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				m.Failover("svc", "a", "b")
				m.PeerTransition("p", "s", "up")
				m.ImportConnected("svc", time.Millisecond)
				m.Drill("t", []DrillService{{Name: "svc", RTO: time.Second, Failback: time.Second}})
			}
		}()
	}
	wg.Wait()
	check(t, scrape(t, m.Handler()), []want{
		{"meshd_failovers_total", l("service", "svc"), counter, 400},
		{"meshd_peer_transitions_total", l("site", "s", "to", "up"), counter, 400},
		{"meshd_drills_total", l("site", "t", "result", "ok"), counter, 400},
	})
}

// TestSlowReadersHoldNoScrapeSlot: clients that request /metrics and never
// read the response (more of them than scrapes are gathered at once) do not
// make a real scrape wait or be refused: a response is gathered into memory
// and written after the gathering slot is released (README "Hostile input
// and limits").
func TestSlowReadersHoldNoScrapeSlot(t *testing.T) {
	var imports []ImportSample
	for i := range 500 {
		imports = append(imports, ImportSample{Name: fmt.Sprintf("service-with-a-long-name-%05d", i)})
	}
	m := New(info("n", "s"), func() Sample { return Sample{Imports: imports} })
	srv := httptest.NewUnstartedServer(m.Handler())
	// Small send buffers (no autotuning): a response of about 1 MB is
	// stuck in the sockets of clients that do not read it.
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.Start()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for range 2 * maxGathers {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(1024)
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	// Once their responses are gathered (and stuck in the sockets), a
	// scrape is served (it may wait for its turn meanwhile; retried if a
	// slow machine makes that longer than gatherWait).
	cl := &http.Client{Timeout: 10 * time.Second}
	var n int64
	var status string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		resp, err := cl.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		n, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if status = resp.Status; resp.StatusCode == http.StatusOK {
			break
		}
	}
	if status != "200 OK" {
		t.Fatalf("scrape while %d clients do not read theirs: %s for 10 s", 2*maxGathers, status)
	}
	if n < 512<<10 {
		t.Fatalf("response of %d bytes: too small to be stuck in the socket buffers", n)
	}
	srv.CloseClientConnections()
}

type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// TestScrapesWaitForAGatheringSlot: more scrapes at once than are gathered
// at once wait for their turn instead of being refused.
func TestScrapesWaitForAGatheringSlot(t *testing.T) {
	release := make(chan struct{})
	m := New(info("n", "s"), func() Sample { <-release; return Sample{} })
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	codes := make(chan int, maxGathers+2)
	for range maxGathers + 2 {
		go func() {
			resp, err := http.Get(srv.URL)
			if err != nil {
				codes <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	time.Sleep(300 * time.Millisecond) // all arrived; maxGathers of them gathering
	close(release)
	for range maxGathers + 2 {
		if c := <-codes; c != http.StatusOK {
			t.Fatalf("a scrape beyond the %d gathered at once: status %d, want 200 after waiting", maxGathers, c)
		}
	}
}
