// Package config loads and validates a meshd node's YAML configuration
// (README, "Configuration reference"). Every error names the file, line and key and says
// what is allowed; unknown keys are errors.
package config

import (
	"net/netip"
	"time"

	"github.com/meshd/meshd/internal/cert"
)

// Config is one node's configuration after defaults are applied.
// Addresses are kept as host:port strings exactly as written; the *AddrPort
// fields hold the parsed form.
type Config struct {
	// Path is the file the config was read from ("" when built in code).
	Path string
	// Overrides are the command-line flags applied on top of the file; a
	// reload reads Path again with the same overrides.
	Overrides Overrides

	Name    string // default: hostname
	Site    string // required
	DataDir string // default: /var/lib/meshd

	Cluster  Cluster
	Gossip   Gossip
	Tunnel   Tunnel
	Relay    Relay
	Exports  []Export
	Imports  []Import
	Failover Failover
	Control  Control
	Metrics  Metrics
	Log      Log
	PKI      PKI // optional node identity (README "Identity and policy"); zero when unset
	Limits   Limits
}

// PKI configures node identities (README "Identity and policy"). Set holds the loaded and
// checked material; nil when pki is not configured.
type PKI struct {
	CA        string   // path of the CA certificate file (may hold several CAs)
	Cert      string   // this node's certificate
	Key       string   // its private keys (0600)
	Blocklist []string // refused certificate fingerprints (hex)
	Set       *cert.Bundle
}

// Limits are per-node caps on what authenticated peers may hold (README "Hostile input and limits").
type Limits struct {
	MaxStreamsPerPeer int // concurrent streams one peer may hold open to this node; default 4096
	MaxPeers          int // members beyond this get no tunnel state; default 4096
}

// Cluster holds the shared secret and bootstrap addresses.
type Cluster struct {
	KeyFile string // path to a file holding the base64 key
	Key     []byte // the decoded key (16, 24 or 32 bytes), from key, key_file or MESHD_CLUSTER_KEY
	// Keys are every key of key_file, one per line (rotation, README "Identity and policy"):
	// Keys[0] == Key encrypts and signs, all decrypt and verify. With key or
	// MESHD_CLUSTER_KEY it holds Key alone.
	Keys [][]byte
	Join []string // gossip host:port of existing nodes
}

// Gossip configures memberlist.
type Gossip struct {
	Bind      netip.AddrPort // default 0.0.0.0:7946
	Advertise netip.AddrPort // zero when unset
}

// Tunnel configures the WireGuard device.
type Tunnel struct {
	Listen    netip.AddrPort // UDP, default 0.0.0.0:51820
	Advertise netip.AddrPort // zero when unset
	Mode      string         // "userspace" (default) | "kernel"
}

// Relay configures this node's relay server.
type Relay struct {
	Enabled   bool
	Listen    netip.AddrPort // default 0.0.0.0:7947
	Advertise netip.AddrPort
}

// Export is a local TCP service offered to the mesh.
type Export struct {
	Name   string
	Target string // host:port dialled by the exporter
	Check  *Check // on by default (2s/1s); nil after `check: false`
	Weight int    // default 1
	// ProxyProtocol is "", "v1" or "v2": send a PROXY protocol header with
	// the client's address to the target before any payload.
	ProxyProtocol string
	Line          int      // line of the entry in the file, for messages
	Allow         []string // who may connect (README "Identity and policy"): "*", site:S, group:G, node:N; nil = everyone

	MaxConns int // concurrent connections through this export; 0 = unlimited
}

// Check is a TCP-connect health check of an export's target.
type Check struct {
	Interval time.Duration // default 2s
	Timeout  time.Duration // default 1s
}

// Import is a mesh service made available as a local TCP listener.
type Import struct {
	Name    string
	Listen  netip.AddrPort
	Sites   []string // preference order
	Balance string   // "least_conn" (default) | "round_robin" | "source_hash"
	// ConnectTimeout is how long a client connection may wait for a
	// healthy endpoint (right after start, or while all are down). Default 5s.
	ConnectTimeout time.Duration
	Line           int

	MaxConns int     // concurrent client connections; 0 = unlimited
	Rate     float64 // new connections per second (token bucket); 0 = unlimited
	Burst    int     // bucket size; 0 = max(1, Rate)
}

// Failover tunes failure handling (an extension of README "Configuration reference").
type Failover struct {
	// SessionTimeout is how long a silent peer session is kept before it
	// is closed: established streams ride out shorter stalls. Default 15s.
	SessionTimeout time.Duration
	// HoldDown is how long a peer that was down must stay healthy before
	// new connections go back to it (failback). Default 2s.
	HoldDown time.Duration
	// DrainGrace is how long SIGTERM lets active streams of this node's
	// exports finish after withdrawing them, before leaving. Default 10s.
	DrainGrace time.Duration
}

// Control configures the local control socket.
type Control struct {
	Socket string // default <data_dir>/meshd.sock
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string // host:port; "" disables
}

// Log configures logging.
type Log struct {
	Level  string // debug | info (default) | warn | error
	Format string // text (default) | json
}

// Overrides are command-line flags that take precedence over the file.
// Empty fields leave the file's value alone.
type Overrides struct {
	Name     string
	Site     string
	Join     []string
	DataDir  string
	LogLevel string // debug | info | warn | error
}

// Balance policies.
const (
	BalanceLeastConn  = "least_conn"
	BalanceRoundRobin = "round_robin"
	BalanceSourceHash = "source_hash"
)

// PROXY protocol versions of exports[].proxy_protocol.
const (
	ProxyV1 = "v1"
	ProxyV2 = "v2"
)

// Tunnel modes.
const (
	ModeUserspace = "userspace"
	ModeKernel    = "kernel"
)

// Defaults applied by Load and Parse.
const (
	DefaultDataDir        = "/var/lib/meshd"
	DefaultGossipBind     = "0.0.0.0:7946"
	DefaultTunnelListen   = "0.0.0.0:51820"
	DefaultRelayListen    = "0.0.0.0:7947"
	DefaultWeight         = 1
	DefaultCheckInterval  = 2 * time.Second
	DefaultCheckTimeout   = 1 * time.Second
	DefaultSessionTimeout = 15 * time.Second
	DefaultHoldDown       = 2 * time.Second
	DefaultDrainGrace     = 10 * time.Second
	DefaultConnectTimeout = 5 * time.Second
	DefaultSocketName     = "meshd.sock" // joined to data_dir when control.socket is unset
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "text"

	// KeyEnv is the environment variable consulted for the cluster key when
	// the file sets neither cluster.key nor cluster.key_file.
	KeyEnv = "MESHD_CLUSTER_KEY"

	// MaxWeight is the largest allowed export weight.
	MaxWeight = 1000

	// Limits (README "Hostile input and limits"): defaults, and the largest value a limit key takes.
	DefaultMaxStreamsPerPeer = 4096
	DefaultMaxPeers          = 4096
	MaxConnsLimit            = 1 << 20
	MaxRate                  = 1000000
)
