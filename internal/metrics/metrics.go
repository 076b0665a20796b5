// Package metrics exposes a meshd node's Prometheus metrics.
//
// Every node owns its own *prometheus.Registry (the global default registry
// is never touched), so several nodes can run in one process, as they do in
// tests and in the demo. The package does not import other meshd packages:
// the node adapts its state into the plain Sample types (sample.go), read
// through a callback once per scrape and exported as const metrics
// (state.go), and it reports discrete events (failovers, peer transitions,
// connect latencies, drills) through the methods in events.go.
//
// Every counter exists from the first scrape at 0 (so increase() sees the
// first event): counters keyed by an import, a site or an outcome are
// created for every import and site in the scrape's sample before they are
// collected. Per-peer series exist only for peers this node holds a session
// with, so their number follows the peers a node talks to, not the mesh.
//
// Exposed series (all names prefixed meshd_):
//
//	node_info{node,site,version}                      1
//	gossip_members                                    alive members memberlist knows, this node included
//	gossip_health_score                               memberlist awareness (0 healthy)
//	gossip_broadcasts_queued                          catalog broadcasts waiting
//	gossip_malformed_messages_total                   malformed gossip input ignored
//	peers{state}                                      peers per state (alive, suspect, dead, left always present)
//	peers_by_path{path}                               peers per current path (direct, relay, none always present)
//	sessions{state}                                   peers per session state (up, idle, down always present)
//	peer_up{peer,site}                                1 if usable for new connections, else 0    (peers with a session)
//	peer_path{peer,site,path}                         1 for the current path, 0 for the others   (peers with a session)
//	peer_rtt_seconds{peer,site}                       last RTT, omitted while unknown            (peers with a session)
//	peer_streams{peer,site}                           open streams                               (peers with a session)
//	peer_transmit_bytes_total{peer,site}              WireGuard bytes sent                       (peers with a session)
//	peer_receive_bytes_total{peer,site}               WireGuard bytes received                   (peers with a session)
//	peer_transitions_total{site,to}                   peers going down|up for endpoint selection
//	import_connections_active{import}                 open client connections
//	import_connections_total{import,result}           accepted connections, result ok|failed|denied|limited
//	import_connect_seconds{import}                    histogram: accept to connected through the mesh
//	failovers_total{service}                          connections served by a later candidate
//	export_healthy{export}                            1 if the backend check passes
//	export_streams_active{export}                     streams being served
//	export_streams_total{export}                      streams served
//	export_check_failures_total{export}               failed backend health checks
//	export_denied_total{export}                       streams refused by the export's allow list (pki)
//	relay_connected                                   1 while connected to a relay as a client
//	relay_client_packets_total{kind}                  packets sent|received|dropped through the relay
//	relay_server_clients                              clients connected to this node's relay
//	relay_server_connections_total                    relay clients that authenticated
//	relay_server_auth_failures_total                  relay handshakes rejected
//	relay_server_packets_total{result}                packets forwarded|dropped|no_route
//	relay_server_forwarded_bytes_total                bytes forwarded
//	limit_refused_total{limit}                        streams refused, limit max_streams_per_peer|export_max_conns
//	limit_sessions_reset_total                        sessions reset: the peer left too many refused streams open
//	limit_peers_left_out                              members given no tunnel state (limits.max_peers)
//	unauthenticated_refused_total{listener}           refused before authentication, listener gossip_tcp|gossip_udp|relay|http
//	drills_total{site,result}                         finished drills, result ok|failed
//	drill_rto_seconds{site,service}                   RTO of the last drill (absent if never recovered)
//	drill_failback_seconds{site,service}              failback time of the last drill (absent if never)
//
// Adding a series: a scrape-time value is a field in a Sample type, a
// Desc in state.go and one emit line; an event is a vector in events.go,
// registered in New's list, with a method (and a touch line when it must
// exist from start). The Go runtime and process collectors are opt-in via
// WithRuntime.
package metrics

import (
	"bytes"
	"cmp"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const ns = "meshd"

// Info identifies the node in meshd_node_info.
type Info struct {
	Node, Site, Version string
}

// Metrics is a node's metric set and registry. All methods are safe for
// concurrent use.
type Metrics struct {
	info   Info
	sample func() Sample
	reg    *prometheus.Registry
	state  stateDescs
	ev     events

	runtimeOnce sync.Once
}

// New returns metrics for the node described by info. Gauges and counters
// derived from node state are read by calling sample once per scrape (it
// may be called concurrently by simultaneous scrapes and must be safe for
// that; nil means an empty sample). Events are counted through the methods
// of Metrics.
func New(info Info, sample func() Sample) *Metrics {
	m := &Metrics{info: info, sample: sample, reg: prometheus.NewRegistry(),
		state: newStateDescs(), ev: newEvents()}
	m.reg.MustRegister(m)
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
// the whole scrape. At most maxGathers scrapes are gathered at once (CPU);
// more wait up to gatherWait for their turn, then are answered 503. Each is
// gathered into memory and then written, so a client that does not read
// its response holds no gathering slot: it cannot make the others wait (or
// be refused) while its write times out.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	slots := make(chan struct{}, maxGathers)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait := time.NewTimer(gatherWait)
		defer wait.Stop()
		select {
		case slots <- struct{}{}:
		case <-wait.C:
			http.Error(w, "metrics: too many scrapes at once", http.StatusServiceUnavailable)
			return
		case <-r.Context().Done():
			return
		}
		var rec bufferedResponse
		rec.header = make(http.Header)
		h.ServeHTTP(&rec, r)
		<-slots
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(cmp.Or(rec.code, http.StatusOK))
		w.Write(rec.body.Bytes())
	})
}

// maxGathers bounds the scrapes gathered at once (CPU, not connections);
// gatherWait is how long a scrape may wait for its turn.
const (
	maxGathers = 4
	gatherWait = 5 * time.Second
)

// bufferedResponse is an http.ResponseWriter that keeps the response.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	return b.body.Write(p)
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.state.describe(ch)
	for _, c := range m.ev.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector: one sample per scrape, the
// state series from it, then the event series, after creating at 0 those
// that the sample says must exist.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	var s Sample
	if m.sample != nil {
		s = m.sample()
	}
	m.state.collect(ch, m.info, &s)
	m.ev.touch(m.info, &s)
	for _, c := range m.ev.collectors() {
		c.Collect(ch)
	}
}

// emitter writes const metrics; invalid label values (e.g. non-UTF-8
// names) do not panic the scrape but surface as a collection error for
// that series only.
type emitter chan<- prometheus.Metric

func (e emitter) emit(d *prometheus.Desc, t prometheus.ValueType, v float64, lvs ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, lvs...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	e <- m
}

func (e emitter) gauge(d *prometheus.Desc, v float64, lvs ...string) {
	e.emit(d, prometheus.GaugeValue, v, lvs...)
}

func (e emitter) counter(d *prometheus.Desc, v float64, lvs ...string) {
	e.emit(d, prometheus.CounterValue, v, lvs...)
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, nil)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
