package node

import (
	"time"

	"github.com/meshd/meshd/internal/cert"
)

// Status is the node's state as `meshd status --json` prints it
// (docs/formats.md). Fields may be added; none may be renamed.
type Status struct {
	Node     NodeStatus      `json:"node"`
	Peers    []PeerStatus    `json:"peers"`
	Services []ServiceStatus `json:"services"`
	Imports  []ImportStatus  `json:"imports"`
}

// NodeStatus describes this node.
type NodeStatus struct {
	Name      string `json:"name"`
	Site      string `json:"site"`
	MeshIP    string `json:"mesh_ip"`
	PublicKey string `json:"public_key"`
	Gossip    string `json:"gossip"`
	Tunnel    string `json:"tunnel"`
	Mode      string `json:"mode"`
	Relay     bool   `json:"relay"`
	Version   string `json:"version"` // meshd build (version and commit)
	// Maintenance is on after `meshd maint on` (README "Operations"): exports
	// withdrawn, new streams refused.
	Maintenance       bool   `json:"maintenance"`
	MaintenanceReason string `json:"maintenance_reason,omitempty"`
	MaintenanceSince  string `json:"maintenance_since,omitempty"` // RFC 3339
	// Identity is this node's certificate (fingerprint, groups, expiry…)
	// when pki is set (docs/formats.md, README "Identity and policy").
	Identity *cert.Info `json:"identity,omitempty"`
	// GossipSentBytes and GossipReceivedBytes count this node's gossip on
	// the wire since it started (UDP and TCP, encrypted).
	GossipSentBytes     uint64 `json:"gossip_sent_bytes"`
	GossipReceivedBytes uint64 `json:"gossip_received_bytes"`
}

// PeerStatus describes one other node as this node sees it.
type PeerStatus struct {
	Name  string `json:"name"`
	Site  string `json:"site"`
	State string `json:"state"` // alive | suspect | dead | left
	// StateSince is when this node saw State begin (its own clock, RFC 3339
	// with milliseconds): `meshd bench --only scale` takes a node's
	// convergence from it rather than from the moment its status was read.
	StateSince    string   `json:"state_since"`
	MeshIP        string   `json:"mesh_ip"`
	PublicKey     string   `json:"public_key"`
	Path          string   `json:"path"` // direct | relay | none
	Endpoint      string   `json:"endpoint"`
	RelayVia      string   `json:"relay_via"`
	RTTMs         *float64 `json:"rtt_ms"`         // null unless alive with a session
	LastHandshake string   `json:"last_handshake"` // RFC 3339, "" if never
	Streams       int      `json:"streams"`
	TxBytes       uint64   `json:"tx_bytes"`
	RxBytes       uint64   `json:"rx_bytes"`
	// Up tells whether new connections may use the peer now (extension):
	// false while its pings go unanswered, its session is down, or during
	// the hold-down after a recovery.
	Up bool `json:"up"`
	// Version is the peer's meshd build as it gossips it; "" for nodes
	// older than the field.
	Version string `json:"version"`
	// Session is "up" (a session is held), "idle" (none held; the first
	// connection opens one) or "down" (one is needed and not up), per
	// docs/formats.md, README "Performance", fleet scale; "down" for a peer that is not alive.
	Session string `json:"session"`
	// CertFingerprint is the SHA-256 fingerprint of the certificate in
	// the peer's record as this node admitted it (with pki; "" without):
	// a rotation's next step waits until every node shows the new ones
	// (README "Rotation, step by step").
	CertFingerprint string `json:"cert_fingerprint,omitempty"`
}

// RTT returns the peer's RTT in milliseconds, 0 when unknown.
func (p PeerStatus) RTT() float64 {
	if p.RTTMs == nil {
		return 0
	}
	return *p.RTTMs
}

// StateSinceLayout is the time format of PeerStatus.StateSince: RFC 3339
// with milliseconds, UTC.
const StateSinceLayout = "2006-01-02T15:04:05.000Z07:00"

// Since returns StateSince parsed; false when absent (older nodes) or
// unreadable.
func (p PeerStatus) Since() (time.Time, bool) {
	if p.StateSince == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, p.StateSince)
	return t, err == nil
}

// Session values.
const (
	SessionUp   = "up"
	SessionIdle = "idle"
	SessionDown = "down"
)

// ServiceStatus is one service of the mesh catalog.
type ServiceStatus struct {
	Name      string           `json:"name"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is one node exporting a service. Active counts this
// node's connections through that endpoint (for this node's own endpoint,
// also the streams it serves for others).
type EndpointStatus struct {
	Node    string `json:"node"`
	Site    string `json:"site"`
	Healthy bool   `json:"healthy"`
	Active  int64  `json:"active"`
}

// ImportStatus is one of this node's imports.
type ImportStatus struct {
	Name   string `json:"name"`
	Listen string `json:"listen"`
	Active int64  `json:"active"`
	Total  uint64 `json:"total"`
	Failed uint64 `json:"failed"`
	// Denied counts connections an exporter's allow list refused (pki).
	Denied uint64 `json:"denied"`
	// Endpoint is the node that served the import's last connection; ""
	// before the first.
	Endpoint string `json:"endpoint"`
}

// Path values.
const (
	PathDirect = "direct"
	PathRelay  = "relay"
	PathNone   = "none"
)

// ReloadResult answers POST /reload.
type ReloadResult struct {
	OK      bool     `json:"ok"`
	File    string   `json:"file"`
	Changes []string `json:"changes"` // what the node's own steps changed, e.g. "import web changed"
}

// MaintRequest is the body of POST /maint and its answer.
type MaintRequest struct {
	On     bool   `json:"on"`
	Reason string `json:"reason,omitempty"`
}
