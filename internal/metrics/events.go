package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connectBuckets are import_connect_seconds' buckets: a LAN connect takes
// about a millisecond, a connect that waits for an endpoint up to
// connect_timeout (5 s by default).
var connectBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// events are the series the node counts as things happen.
type events struct {
	failovers   *prometheus.CounterVec   // service
	transitions *prometheus.CounterVec   // site, to
	connect     *prometheus.HistogramVec // import
	drills      *prometheus.CounterVec   // site, result
	drillRTO    *prometheus.GaugeVec     // site, service
	drillBack   *prometheus.GaugeVec     // site, service
}

func newEvents() events {
	return events{
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "failovers_total",
			Help: "Connections served by a later candidate endpoint than the first choice.",
		}, []string{"service"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "peer_transitions_total",
			Help: "Peers of a site becoming unusable (to=down) or usable again (to=up) for new connections.",
		}, []string{"site", "to"}),
		connect: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "import_connect_seconds",
			Help:    "Time from accepting a client connection to its stream being connected to a backend through the mesh (successful connections).",
			Buckets: connectBuckets,
		}, []string{"import"}),
		drills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "drills_total",
			Help: "Failover drills run from this node, by drilled site and result (ok: every service failed over and no probe failed).",
		}, []string{"site", "result"}),
		drillRTO: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "drill_rto_seconds",
			Help: "Recovery time of the last failover drill; absent if it never recovered.",
		}, []string{"site", "service"}),
		drillBack: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "drill_failback_seconds",
			Help: "Failback time of the last failover drill; absent if it never failed back.",
		}, []string{"site", "service"}),
	}
}

func (ev *events) collectors() []prometheus.Collector {
	return []prometheus.Collector{ev.failovers, ev.transitions, ev.connect, ev.drills, ev.drillRTO, ev.drillBack}
}

// touch creates at 0 the event series that s says must exist: per import,
// and per site known (this node's own included, so that every family is
// there from the first scrape of a lone node).
func (ev *events) touch(info Info, s *Sample) {
	for _, im := range s.Imports {
		ev.failovers.GetMetricWithLabelValues(im.Name)
		ev.connect.GetMetricWithLabelValues(im.Name)
	}
	sites := map[string]bool{info.Site: true}
	seen := map[string]bool{}
	for _, p := range s.Peers {
		if !seen[p.Name] { // the first sample for a name wins, as in state.go
			seen[p.Name] = true
			sites[p.Site] = true
		}
	}
	for site := range sites {
		ev.transitions.GetMetricWithLabelValues(site, "down")
		ev.transitions.GetMetricWithLabelValues(site, "up")
		if site != info.Site {
			ev.drills.GetMetricWithLabelValues(site, "ok")
			ev.drills.GetMetricWithLabelValues(site, "failed")
		}
	}
}

// Failover records that a connection to service was served by a later
// candidate (toNode) than the first one (fromNode). Only the service is a
// label; the node names are accepted for the caller's convenience.
func (m *Metrics) Failover(service, fromNode, toNode string) {
	inc(m.ev.failovers, service)
}

// PeerTransition records a peer of site becoming "down" or "up" for
// endpoint selection. The peer's name is logged by the node, not a label:
// the series stay bounded by the number of sites.
func (m *Metrics) PeerTransition(peer, site, to string) {
	inc(m.ev.transitions, site, to)
}

// ImportConnected records how long a client connection to import took to
// be connected to a backend through the mesh.
func (m *Metrics) ImportConnected(importName string, d time.Duration) {
	if o, err := m.ev.connect.GetMetricWithLabelValues(importName); err == nil {
		o.Observe(d.Seconds())
	}
}

// DrillService is one service's outcome in a drill: failed probes, and the
// RTO and failback times (< 0: never).
type DrillService struct {
	Name          string
	Failed        int
	RTO, Failback time.Duration
}

// Drill records one finished drill of site. It counts as failed if any
// service had failed probes or never recovered. The RTO and failback
// gauges hold each service's last values and are removed when that drill
// never reached the state.
func (m *Metrics) Drill(site string, services []DrillService) {
	result := "ok"
	for _, s := range services {
		if s.Failed > 0 || s.RTO < 0 {
			result = "failed"
		}
		setOrDelete(m.ev.drillRTO, s.RTO, site, s.Name)
		setOrDelete(m.ev.drillBack, s.Failback, site, s.Name)
	}
	inc(m.ev.drills, site, result)
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
