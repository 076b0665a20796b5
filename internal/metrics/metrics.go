// Package metrics exposes a meshd node's Prometheus metrics.
//
// Every node owns its own *prometheus.Registry (the global default registry
// is never touched), so several nodes can run in one process, as they do in
// tests and in the demo. The package does not import other meshd packages:
// the node adapts its state into the plain Sample types below, which are
// read through a callback at scrape time and exported as const metrics, and
// it reports discrete events (failovers, peer transitions, drills) through
// the event methods on Metrics.
//
// Exposed series (all names prefixed meshd_):
//
//	meshd_node_info{node,site}                          1
//	meshd_peers{state}                                  peers per state (alive, suspect, dead, left always present)
//	meshd_peer_up{peer,site}                            1 if usable for endpoint selection, else 0
//	meshd_peer_path{peer,path}                          1 for the current path (direct, relay, none)
//	meshd_peer_rtt_seconds{peer}                        last RTT (omitted while unknown)
//	meshd_peer_streams{peer}                            open streams
//	meshd_peer_transmit_bytes_total{peer}               bytes sent
//	meshd_peer_receive_bytes_total{peer}                bytes received
//	meshd_import_connections_active{import}             open client connections
//	meshd_import_connections_total{import,result}       accepted connections, result ok|failed
//	meshd_export_healthy{export}                        1 if the backend check passes
//	meshd_export_streams_active{export}                 streams being served
//	meshd_export_streams_total{export}                  streams served
//	meshd_failovers_total{service}                      connections served by a later candidate
//	meshd_peer_transitions_total{peer,to}               endpoint-selection transitions, to down|up
//	meshd_drills_total{site,service,result}             finished drills, result ok|failed
//	meshd_drill_rto_seconds{site,service}               RTO of the last drill (absent if never recovered)
//	meshd_drill_failback_seconds{site,service}          failback time of the last drill (absent if never)
//
// The Go runtime and process collectors are opt-in via WithRuntime.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// PeerSample is the state of one peer at scrape time.
type PeerSample struct {
	Name, Site, State, Path string
	RTT                     time.Duration // <= 0 means unknown
	Streams                 int
	TxBytes, RxBytes        uint64
	Usable                  bool // usable for endpoint selection
}

// ImportSample is the state of one import (local listener) at scrape time.
type ImportSample struct {
	Name          string
	Active        int64
	Total, Failed uint64
}

// ExportSample is the state of one local export at scrape time.
type ExportSample struct {
	Name    string
	Healthy bool
	Active  int64
	Served  uint64
}

// Sample is the node state read at every scrape.
type Sample struct {
	Peers   []PeerSample
	Imports []ImportSample
	Exports []ExportSample
}

// Peer states that are always reported by meshd_peers, even when zero.
var peerStates = []string{"alive", "suspect", "dead", "left"}

const ns = "meshd"

// Metrics is a node's metric set and registry. All methods are safe for
// concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	failovers   *prometheus.CounterVec
	transitions *prometheus.CounterVec
	drills      *prometheus.CounterVec
	drillRTO    *prometheus.GaugeVec
	drillBack   *prometheus.GaugeVec

	runtimeOnce sync.Once
}

// New returns metrics for the node named node in site. Gauges and counters
// derived from node state are read by calling sample at scrape time (it may
// be called concurrently by simultaneous scrapes and must be safe for that;
// nil means an empty sample). Event counters are incremented by the node
// through the methods of Metrics.
func New(node, site string, sample func() Sample) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "failovers_total",
			Help: "Connections served by a later candidate endpoint than the first choice.",
		}, []string{"service"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "peer_transitions_total",
			Help: "Peer transitions for endpoint selection, by target state (down or up).",
		}, []string{"peer", "to"}),
		drills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "drills_total",
			Help: "Finished failover drills per service, by result (ok or failed).",
		}, []string{"site", "service", "result"}),
		drillRTO: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "drill_rto_seconds",
			Help: "Recovery time of the last failover drill; absent if it never recovered.",
		}, []string{"site", "service"}),
		drillBack: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "drill_failback_seconds",
			Help: "Failback time of the last failover drill; absent if it never failed back.",
		}, []string{"site", "service"}),
	}
	m.reg.MustRegister(
		newStateCollector(node, site, sample),
		m.failovers, m.transitions, m.drills, m.drillRTO, m.drillBack,
	)
	return m
}

// WithRuntime registers the standard Go runtime and process collectors on
// the node's registry and returns m. Calling it more than once is harmless.
func (m *Metrics) WithRuntime() *Metrics {
	m.runtimeOnce.Do(func() {
		m.reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
	})
	return m
}

// Registry returns the node's registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler returns the HTTP handler serving the registry in the Prometheus
// exposition format (for GET /metrics). A failing collector does not fail
// the whole scrape.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Failover records that a connection to service was served by a later
// candidate (toNode) than the first one (fromNode). Only the service is a
// label; the node names are accepted for the caller's convenience.
func (m *Metrics) Failover(service, fromNode, toNode string) {
	inc(m.failovers, service)
}

// PeerTransition records peer becoming "down" or "up" for endpoint selection.
func (m *Metrics) PeerTransition(peer, to string) {
	inc(m.transitions, peer, to)
}

// Drill records one finished drill of service in site. failed is the number
// of failed probes; rto and failback < 0 mean "never". The drill counts as
// failed if failed > 0 or rto < 0. The RTO and failback gauges hold the last
// drill's values and are removed when that drill never reached the state.
func (m *Metrics) Drill(site, service string, failed int, rto, failback time.Duration) {
	result := "ok"
	if failed > 0 || rto < 0 {
		result = "failed"
	}
	inc(m.drills, site, service, result)
	setOrDelete(m.drillRTO, rto, site, service)
	setOrDelete(m.drillBack, failback, site, service)
}

// inc and setOrDelete drop events whose label values are invalid (e.g. not
// UTF-8) instead of panicking like WithLabelValues would.
func inc(c *prometheus.CounterVec, lvs ...string) {
	if ctr, err := c.GetMetricWithLabelValues(lvs...); err == nil {
		ctr.Inc()
	}
}

func setOrDelete(g *prometheus.GaugeVec, d time.Duration, lvs ...string) {
	if d < 0 {
		g.DeleteLabelValues(lvs...)
		return
	}
	if gg, err := g.GetMetricWithLabelValues(lvs...); err == nil {
		gg.Set(d.Seconds())
	}
}

// stateCollector turns a Sample taken at scrape time into const metrics.
type stateCollector struct {
	node, site string
	sample     func() Sample

	nodeInfo, peers, peerUp, peerPath, peerRTT, peerStreams, peerTx, peerRx *prometheus.Desc
	impActive, impTotal, expHealthy, expActive, expTotal                    *prometheus.Desc
}

func newStateCollector(node, site string, sample func() Sample) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, nil)
	}
	return &stateCollector{
		node: node, site: site, sample: sample,
		nodeInfo:    d("node_info", "Identity of this node; always 1.", "node", "site"),
		peers:       d("peers", "Number of known peers by membership state.", "state"),
		peerUp:      d("peer_up", "Whether the peer is usable for endpoint selection (1) or not (0).", "peer", "site"),
		peerPath:    d("peer_path", "Current path to the peer (direct, relay or none); always 1.", "peer", "path"),
		peerRTT:     d("peer_rtt_seconds", "Last measured round-trip time to the peer.", "peer"),
		peerStreams: d("peer_streams", "Open streams with the peer.", "peer"),
		peerTx:      d("peer_transmit_bytes_total", "Bytes sent to the peer.", "peer"),
		peerRx:      d("peer_receive_bytes_total", "Bytes received from the peer.", "peer"),
		impActive:   d("import_connections_active", "Open client connections on the import.", "import"),
		impTotal:    d("import_connections_total", "Client connections accepted by the import, by result (ok or failed).", "import", "result"),
		expHealthy:  d("export_healthy", "Whether the export's backend check passes (1) or not (0).", "export"),
		expActive:   d("export_streams_active", "Streams currently served by the export.", "export"),
		expTotal:    d("export_streams_total", "Streams served by the export.", "export"),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.nodeInfo, c.peers, c.peerUp, c.peerPath, c.peerRTT, c.peerStreams, c.peerTx, c.peerRx,
		c.impActive, c.impTotal, c.expHealthy, c.expActive, c.expTotal,
	} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	// Invalid label values (e.g. non-UTF-8 names) must not panic the
	// scrape; they surface as a collection error for that series only.
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, lvs ...string) {
		m, err := prometheus.NewConstMetric(d, t, v, lvs...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
	gauge := func(d *prometheus.Desc, v float64, lvs ...string) { emit(d, prometheus.GaugeValue, v, lvs...) }
	counter := func(d *prometheus.Desc, v float64, lvs ...string) { emit(d, prometheus.CounterValue, v, lvs...) }

	gauge(c.nodeInfo, 1, c.node, c.site)

	var s Sample
	if c.sample != nil {
		s = c.sample()
	}

	// Duplicate names would make the registry reject the whole scrape;
	// the first sample for a name wins.
	states := make(map[string]int, len(peerStates))
	for _, st := range peerStates {
		states[st] = 0
	}
	seen := map[string]bool{}
	for _, p := range s.Peers {
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		state := p.State
		if state == "" {
			state = "unknown"
		}
		states[state]++
		path := p.Path
		if path == "" {
			path = "none"
		}
		gauge(c.peerUp, b2f(p.Usable), p.Name, p.Site)
		gauge(c.peerPath, 1, p.Name, path)
		if p.RTT > 0 {
			gauge(c.peerRTT, p.RTT.Seconds(), p.Name)
		}
		gauge(c.peerStreams, float64(p.Streams), p.Name)
		counter(c.peerTx, float64(p.TxBytes), p.Name)
		counter(c.peerRx, float64(p.RxBytes), p.Name)
	}
	for st, n := range states {
		gauge(c.peers, float64(n), st)
	}

	seen = map[string]bool{}
	for _, im := range s.Imports {
		if seen[im.Name] {
			continue
		}
		seen[im.Name] = true
		ok := uint64(0)
		if im.Total > im.Failed {
			ok = im.Total - im.Failed
		}
		gauge(c.impActive, float64(im.Active), im.Name)
		counter(c.impTotal, float64(ok), im.Name, "ok")
		counter(c.impTotal, float64(im.Failed), im.Name, "failed")
	}

	seen = map[string]bool{}
	for _, ex := range s.Exports {
		if seen[ex.Name] {
			continue
		}
		seen[ex.Name] = true
		gauge(c.expHealthy, b2f(ex.Healthy), ex.Name)
		gauge(c.expActive, float64(ex.Active), ex.Name)
		counter(c.expTotal, float64(ex.Served), ex.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
