package node

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/metrics"
	"github.com/meshd/meshd/internal/statuspage"
	"github.com/meshd/meshd/relay"
)

// httpLimits bound what a client of the metrics.listen server can hold:
// it is reachable by anyone who can reach the address, so every
// connection has deadlines, idle keep-alive connections are closed soon,
// and at most maxConns are open (README "Hostile input and limits"): a
// new connection beyond them closes the open one that has waited longest
// without a request being served (idle keep-alive, or not sent its
// request yet), so connections held open by someone else cannot lock
// Prometheus or the status page out; when every one is serving a
// request, the new one is closed at once.
type httpLimits struct {
	readHeader, read, write, idle time.Duration
	maxHeaderBytes, maxConns      int
}

// write: a response not taken within 10 s (Prometheus's default scrape
// timeout) ends its connection.
var metricsLimits = httpLimits{
	readHeader: 5 * time.Second, read: 10 * time.Second, write: 10 * time.Second, idle: 15 * time.Second,
	maxHeaderBytes: 8 << 10, maxConns: 64,
}

// discardLog drops net/http's own error log: whoever reaches the address
// could otherwise fill the node's log.
var discardLog = log.New(io.Discard, "", 0)

// metricsServer serves Prometheus /metrics and the status page
// (internal/statuspage) on metrics.listen.
type metricsServer struct {
	srv      *http.Server
	addr     string
	maxConns int
	done     chan struct{}

	mu      sync.Mutex
	conns   map[net.Conn]httpConn // guarded by mu: open connections
	evicted *atomic.Uint64        // connections closed to make room (the node's count)
}

// httpConn is an open connection's state and since when.
type httpConn struct {
	state http.ConnState
	since time.Time
}

// MetricsAddr returns the bound metrics address ("" when disabled).
func (n *Node) MetricsAddr() string {
	if n.mtr == nil {
		return ""
	}
	return n.mtr.addr
}

func startMetrics(n *Node, addr string) (*metricsServer, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.metrics.WithRuntime().Handler())
	mux.Handle("/", statuspage.Handler(statuspage.Source{Status: func() any { return n.Status() }, Drills: n.drills}))
	return serveHTTP(n, addr, mux, metricsLimits)
}

// serveHTTP serves h on addr within lim until close.
func serveHTTP(n *Node, addr string, h http.Handler, lim httpLimits) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: metrics.listen %s: %w", addr, err)
	}
	ms := &metricsServer{done: make(chan struct{}), addr: ln.Addr().String(), maxConns: lim.maxConns,
		conns: make(map[net.Conn]httpConn), evicted: new(atomic.Uint64)}
	if n.lim != nil {
		ms.evicted = &n.lim.httpEvicted
	}
	ms.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.readHeader,
		ReadTimeout:       lim.read,
		WriteTimeout:      lim.write,
		IdleTimeout:       lim.idle,
		MaxHeaderBytes:    lim.maxHeaderBytes,
		ConnState:         ms.connState,
		ErrorLog:          discardLog,
	}
	go func() {
		defer close(ms.done)
		if err := ms.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("metrics server", "err", err)
		}
	}()
	return ms, nil
}

// connState caps open connections at maxConns (see httpLimits): a new one
// beyond them takes the place of the one waiting longest for a request,
// or is closed at once if every one is serving a request.
func (ms *metricsServer) connState(c net.Conn, st http.ConnState) {
	now := time.Now()
	ms.mu.Lock()
	switch st {
	case http.StateNew:
		var victim net.Conn
		if len(ms.conns) >= ms.maxConns {
			var since time.Time
			for oc, e := range ms.conns {
				if e.state != http.StateActive && (victim == nil || e.since.Before(since)) {
					victim, since = oc, e.since
				}
			}
			if victim == nil {
				ms.mu.Unlock()
				c.Close()
				return
			}
			delete(ms.conns, victim)
		}
		ms.conns[c] = httpConn{st, now}
		ms.mu.Unlock()
		if victim != nil {
			ms.evicted.Add(1)
			victim.Close()
		}
		return
	case http.StateActive, http.StateIdle:
		if _, ok := ms.conns[c]; ok {
			ms.conns[c] = httpConn{st, now}
		}
	case http.StateHijacked, http.StateClosed:
		delete(ms.conns, c)
	}
	ms.mu.Unlock()
}

// open returns the number of open connections.
func (ms *metricsServer) open() int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return len(ms.conns)
}

func (ms *metricsServer) close() {
	ms.srv.Close()
	<-ms.done
}

// relayClientStats keeps the relay client's packet counters cumulative
// across reconnects, for metrics.
type relayClientStats struct {
	mu   sync.Mutex
	cur  *relay.Client     // guarded by mu; nil when not connected
	base relay.ClientStats // guarded by mu; totals of earlier clients
}

func (r *relayClientStats) use(c *relay.Client) {
	r.mu.Lock()
	r.cur = c
	r.mu.Unlock()
}

func (r *relayClientStats) done(c *relay.Client) {
	st := c.Stats()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == c {
		r.cur = nil
	}
	r.base.Sent += st.Sent
	r.base.Received += st.Received
	r.base.Dropped += st.Dropped
}

func (r *relayClientStats) read() (st relay.ClientStats, connected bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st = r.base
	if r.cur != nil {
		c := r.cur.Stats()
		st.Sent += c.Sent
		st.Received += c.Received
		st.Dropped += c.Dropped
		connected = true
	}
	return st, connected
}

// metricsSample adapts the node's state for the metrics collector. It
// reads the tunnel's session stats, never WireGuard's UAPI dump, so a
// scrape takes no lock the data path waits on.
func (n *Node) metricsSample() metrics.Sample {
	c := n.catalog.Load()
	if c == nil || n.tun == nil {
		return metrics.Sample{}
	}
	var s metrics.Sample
	stats := n.tun.AllSessionStats()
	now := time.Now()
	for _, m := range c.members {
		ts, ok := stats[m.Meta.PublicKey]
		p := metrics.PeerSample{Name: m.Name, Site: m.Meta.Site, State: m.State.String(), Path: PathNone,
			Usable: n.peerUsable(m, ts, now), SessionState: ts.Session}
		if ok && ts.SessionUp {
			p.Session = true
			if m.State != gossip.StateLeft {
				p.Path = ts.Path
			}
			p.RTT, p.Streams, p.TxBytes, p.RxBytes = ts.RTT, ts.Streams, ts.TxBytes, ts.RxBytes
		}
		s.Peers = append(s.Peers, p)
	}
	for _, im := range n.importList() {
		s.Imports = append(s.Imports, metrics.ImportSample{Name: im.cfg().Name,
			Active: im.active.Load(), Total: im.total.Load(), Failed: im.failed.Load(), Limited: im.gate.limited.Load(), Denied: im.denied.Load()})
	}
	m := n.exportMap()
	for _, e := range n.Config().Exports {
		x := m[e.Name]
		if x == nil {
			continue
		}
		s.Exports = append(s.Exports, metrics.ExportSample{Name: e.Name, Healthy: x.healthy.Load(),
			Active: x.active.Load(), Served: x.served.Load(), CheckFailures: x.checkFailures.Load(), Denied: x.denied.Load()})
	}
	s.Limits = metrics.LimitSample{StreamsRefused: n.lim.streamsRefused.Load(), ExportRefused: n.lim.exportRefused.Load(),
		SessionsReset: n.lim.sessionsReset.Load(), PeersLeftOut: n.lim.peersLeftOut.Load(), HTTPConns: n.lim.httpEvicted.Load()}
	if n.gsp != nil {
		g := n.gsp.Stats()
		s.Gossip = metrics.GossipSample{Members: g.Members, HealthScore: g.HealthScore, Queued: g.Queued, Malformed: g.Malformed}
		s.Limits.GossipStreams, s.Limits.GossipPackets = g.StreamsRefused, g.PacketsDropped
	}
	rc, connected := n.relayStats.read()
	s.Relay = metrics.RelaySample{Connected: connected, Sent: rc.Sent, Received: rc.Received, Dropped: rc.Dropped}
	if n.rly != nil {
		rs := n.rly.srv.Stats()
		s.Relay.ServerClients, s.Relay.ServerAccepted, s.Relay.ServerAuthFailures = rs.Clients, rs.Accepted, rs.AuthFailures
		s.Relay.ServerForwarded, s.Relay.ServerForwardedBytes = rs.Forwarded, rs.ForwardedBytes
		s.Relay.ServerDropped, s.Relay.ServerNoRoute = rs.Dropped, rs.NoRoute
		s.Limits.RelayConns = rs.Refused + rs.Evicted
	}
	return s
}
