package metrics

import "time"

// Sample is the node state read once per scrape.
type Sample struct {
	Peers   []PeerSample
	Imports []ImportSample
	Exports []ExportSample
	Gossip  GossipSample
	Relay   RelaySample
	Limits  LimitSample
}

// LimitSample counts what the node's limits refused (README "Hostile input
// and limits"); counters since start.
type LimitSample struct {
	StreamsRefused uint64 // streams beyond limits.max_streams_per_peer
	ExportRefused  uint64 // streams beyond an export's max_conns
	SessionsReset  uint64 // sessions reset: the peer left too many refused streams open
	PeersLeftOut   int64  // members given no tunnel state now (limits.max_peers)

	// Unauthenticated input refused before anything was kept for it.
	GossipStreams uint64 // gossip TCP streams closed by the guard
	GossipPackets uint64 // gossip UDP packets dropped by the guard
	RelayConns    uint64 // relay connections refused (per source, full) or evicted in the handshake
	HTTPConns     uint64 // metrics.listen connections closed to make room
}

// PeerSample is the state of one peer at scrape time. Per-peer series are
// exported only for peers with Session set; the others count in the
// aggregates (meshd_peers, meshd_peers_by_path) only.
type PeerSample struct {
	Name, Site, State, Path string
	Session                 bool          // this node holds a session with the peer
	RTT                     time.Duration // <= 0 means unknown
	Streams                 int
	TxBytes, RxBytes        uint64
	Usable                  bool // usable for new connections
	// SessionState is "up", "idle" (no session; opened on demand) or
	// "down" (needed, not up), counted by meshd_sessions.
	SessionState string
}

// ImportSample is the state of one import (local listener) at scrape time.
type ImportSample struct {
	Name          string
	Active        int64
	Total, Failed uint64
	Denied        uint64 // refused by an exporter's allow list (README "Identity and policy"); counted in Total, not in Failed
	Limited       uint64 // closed at once: over max_conns or rate (not in Total)
}

// ExportSample is the state of one local export at scrape time.
type ExportSample struct {
	Name          string
	Healthy       bool
	Active        int64
	Served        uint64
	CheckFailures uint64 // failed backend health checks
	Denied        uint64 // streams refused by the export's allow list (README "Identity and policy")
}

// GossipSample is the gossip layer's state at scrape time.
type GossipSample struct {
	Members     int
	HealthScore int
	Queued      int
	Malformed   uint64
}

// RelaySample is this node's relay client and (when relay.enabled) relay
// server state at scrape time; counters are cumulative over reconnects.
type RelaySample struct {
	Connected               bool // connected to a relay as a client
	Sent, Received, Dropped uint64

	ServerClients        int
	ServerAccepted       uint64
	ServerAuthFailures   uint64
	ServerForwarded      uint64
	ServerForwardedBytes uint64
	ServerDropped        uint64
	ServerNoRoute        uint64
}
