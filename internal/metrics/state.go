package metrics

import "github.com/prometheus/client_golang/prometheus"

// Peer states and paths that are always reported, even when zero.
var (
	peerStates = []string{"alive", "suspect", "dead", "left"}
	peerPaths  = []string{"direct", "relay", "none"}
	// sessionStates are the peers' session states (docs/formats.md, README "Performance", fleet scale).
	sessionStates = []string{"up", "idle", "down"}
)

// stateDescs describe the series derived from a Sample; all lists every
// one made in newStateDescs, for Describe.
type stateDescs struct {
	all []*prometheus.Desc

	nodeInfo *prometheus.Desc

	gossipMembers, gossipHealth, gossipQueued, gossipMalformed *prometheus.Desc

	peers, peersByPath                                                *prometheus.Desc
	sessions                                                          *prometheus.Desc
	peerUp, peerPath, peerRTT, peerStreams, peerTx, peerRx            *prometheus.Desc
	impActive, impTotal                                               *prometheus.Desc
	expHealthy, expActive, expTotal, expCheckFailures                 *prometheus.Desc
	expDenied                                                         *prometheus.Desc
	relayConnected, relayPackets                                      *prometheus.Desc
	relaySrvClients, relaySrvAccepted, relaySrvAuthFail, relaySrvPkts *prometheus.Desc
	relaySrvBytes                                                     *prometheus.Desc
	limRefused, limReset, limLeftOut, unauthRefused                   *prometheus.Desc
}

func newStateDescs() stateDescs {
	var all []*prometheus.Desc
	d := func(name, help string, labels ...string) *prometheus.Desc {
		x := desc(name, help, labels...)
		all = append(all, x)
		return x
	}
	s := stateDescs{
		nodeInfo: d("node_info", "Identity and version of this node; always 1.", "node", "site", "version"),

		gossipMembers:   d("gossip_members", "Alive members memberlist knows, this node included."),
		gossipHealth:    d("gossip_health_score", "Memberlist awareness score: 0 is healthy, higher means this node answers probes late."),
		gossipQueued:    d("gossip_broadcasts_queued", "Catalog broadcasts waiting to be gossiped."),
		gossipMalformed: d("gossip_malformed_messages_total", "Malformed gossip catalog messages and states received and ignored."),

		peers:       d("peers", "Known peers by membership state.", "state"),
		peersByPath: d("peers_by_path", "Known peers by current path (direct, relay or none).", "path"),
		sessions:    d("sessions", "Known peers by session state: up (a session is held), idle (none; opened on demand) or down (needed, not up).", "state"),
		peerUp:      d("peer_up", "Whether the peer is usable for new connections (1) or not (0); peers with a session only.", "peer", "site"),
		peerPath:    d("peer_path", "1 for the current path to the peer (direct, relay or none), 0 for the others; peers with a session only.", "peer", "site", "path"),
		peerRTT:     d("peer_rtt_seconds", "Last measured round-trip time to the peer; peers with a session only.", "peer", "site"),
		peerStreams: d("peer_streams", "Open streams with the peer; peers with a session only.", "peer", "site"),
		peerTx:      d("peer_transmit_bytes_total", "WireGuard bytes sent to the peer; peers with a session only.", "peer", "site"),
		peerRx:      d("peer_receive_bytes_total", "WireGuard bytes received from the peer; peers with a session only.", "peer", "site"),

		impActive: d("import_connections_active", "Open client connections on the import.", "import"),
		impTotal:  d("import_connections_total", "Client connections to the import, by result: ok, failed (no endpoint reachable), denied (an exporter's allow list) or limited (closed at once over max_conns or rate).", "import", "result"),

		expHealthy:       d("export_healthy", "Whether the export's backend check passes (1) or not (0).", "export"),
		expActive:        d("export_streams_active", "Streams currently served by the export.", "export"),
		expTotal:         d("export_streams_total", "Streams served by the export.", "export"),
		expCheckFailures: d("export_check_failures_total", "Failed health checks of the export's backend.", "export"),
		expDenied:        d("export_denied_total", "Streams the export refused by its allow list (pki).", "export"),

		relayConnected:   d("relay_connected", "Whether this node is connected to a relay as a client (1) or not (0)."),
		relayPackets:     d("relay_client_packets_total", "Packets through this node's relay client, by kind (sent, received, dropped).", "kind"),
		relaySrvClients:  d("relay_server_clients", "Clients connected to this node's relay (0 unless relay.enabled)."),
		relaySrvAccepted: d("relay_server_connections_total", "Relay clients that authenticated to this node's relay."),
		relaySrvAuthFail: d("relay_server_auth_failures_total", "Relay handshakes this node's relay rejected."),
		relaySrvPkts:     d("relay_server_packets_total", "Packets this node's relay handled, by result (forwarded, dropped, no_route).", "result"),
		relaySrvBytes:    d("relay_server_forwarded_bytes_total", "Packet bytes this node's relay forwarded."),

		limRefused:    d("limit_refused_total", "Streams refused by a limit: max_streams_per_peer or export_max_conns.", "limit"),
		limReset:      d("limit_sessions_reset_total", "Peer sessions reset because the peer left more refused streams open than allowed."),
		limLeftOut:    d("limit_peers_left_out", "Members given no tunnel state because of limits.max_peers."),
		unauthRefused: d("unauthenticated_refused_total", "Unauthenticated input refused before the node kept state for it, by listener (gossip_tcp, gossip_udp, relay, http).", "listener"),
	}
	s.all = all
	return s
}

func (d *stateDescs) describe(ch chan<- *prometheus.Desc) {
	for _, x := range d.all {
		ch <- x
	}
}

// collect emits the state series of s. Duplicate names in s would make
// the registry reject the whole scrape; the first sample for a name wins.
func (d *stateDescs) collect(ch chan<- prometheus.Metric, info Info, s *Sample) {
	e := emitter(ch)
	e.gauge(d.nodeInfo, 1, info.Node, info.Site, info.Version)

	g := s.Gossip
	e.gauge(d.gossipMembers, float64(g.Members))
	e.gauge(d.gossipHealth, float64(g.HealthScore))
	e.gauge(d.gossipQueued, float64(g.Queued))
	e.counter(d.gossipMalformed, float64(g.Malformed))

	states := make(map[string]int, len(peerStates))
	for _, st := range peerStates {
		states[st] = 0
	}
	sessions := make(map[string]int, len(sessionStates))
	for _, st := range sessionStates {
		sessions[st] = 0
	}
	paths := make(map[string]int, len(peerPaths))
	for _, p := range peerPaths {
		paths[p] = 0
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
		paths[path]++
		if p.SessionState != "" {
			sessions[p.SessionState]++
		}
		if !p.Session {
			continue
		}
		e.gauge(d.peerUp, b2f(p.Usable), p.Name, p.Site)
		for _, pp := range peerPaths {
			e.gauge(d.peerPath, b2f(pp == path), p.Name, p.Site, pp)
		}
		if p.RTT > 0 {
			e.gauge(d.peerRTT, p.RTT.Seconds(), p.Name, p.Site)
		}
		e.gauge(d.peerStreams, float64(p.Streams), p.Name, p.Site)
		e.counter(d.peerTx, float64(p.TxBytes), p.Name, p.Site)
		e.counter(d.peerRx, float64(p.RxBytes), p.Name, p.Site)
	}
	for st, n := range states {
		e.gauge(d.peers, float64(n), st)
	}
	for p, n := range paths {
		e.gauge(d.peersByPath, float64(n), p)
	}
	for st, n := range sessions {
		e.gauge(d.sessions, float64(n), st)
	}

	seen = map[string]bool{}
	for _, im := range s.Imports {
		if seen[im.Name] {
			continue
		}
		seen[im.Name] = true
		ok := uint64(0)
		if im.Total > im.Failed+im.Denied {
			ok = im.Total - im.Failed - im.Denied
		}
		e.gauge(d.impActive, float64(im.Active), im.Name)
		e.counter(d.impTotal, float64(ok), im.Name, "ok")
		e.counter(d.impTotal, float64(im.Failed), im.Name, "failed")
		e.counter(d.impTotal, float64(im.Denied), im.Name, "denied")
		e.counter(d.impTotal, float64(im.Limited), im.Name, "limited")
	}

	seen = map[string]bool{}
	for _, ex := range s.Exports {
		if seen[ex.Name] {
			continue
		}
		seen[ex.Name] = true
		e.gauge(d.expHealthy, b2f(ex.Healthy), ex.Name)
		e.gauge(d.expActive, float64(ex.Active), ex.Name)
		e.counter(d.expTotal, float64(ex.Served), ex.Name)
		e.counter(d.expCheckFailures, float64(ex.CheckFailures), ex.Name)
		e.counter(d.expDenied, float64(ex.Denied), ex.Name)
	}

	r := s.Relay
	e.gauge(d.relayConnected, b2f(r.Connected))
	e.counter(d.relayPackets, float64(r.Sent), "sent")
	e.counter(d.relayPackets, float64(r.Received), "received")
	e.counter(d.relayPackets, float64(r.Dropped), "dropped")
	e.gauge(d.relaySrvClients, float64(r.ServerClients))
	e.counter(d.relaySrvAccepted, float64(r.ServerAccepted))
	e.counter(d.relaySrvAuthFail, float64(r.ServerAuthFailures))
	e.counter(d.relaySrvPkts, float64(r.ServerForwarded), "forwarded")
	e.counter(d.relaySrvPkts, float64(r.ServerDropped), "dropped")
	e.counter(d.relaySrvPkts, float64(r.ServerNoRoute), "no_route")
	e.counter(d.relaySrvBytes, float64(r.ServerForwardedBytes))

	l := s.Limits
	e.counter(d.limRefused, float64(l.StreamsRefused), "max_streams_per_peer")
	e.counter(d.limRefused, float64(l.ExportRefused), "export_max_conns")
	e.counter(d.limReset, float64(l.SessionsReset))
	e.gauge(d.limLeftOut, float64(l.PeersLeftOut))
	e.counter(d.unauthRefused, float64(l.GossipStreams), "gossip_tcp")
	e.counter(d.unauthRefused, float64(l.GossipPackets), "gossip_udp")
	e.counter(d.unauthRefused, float64(l.RelayConns), "relay")
	e.counter(d.unauthRefused, float64(l.HTTPConns), "http")
}
