// Package lab starts real meshd nodes for benchmarks and tests, as
// tailscale's tstest/integration does for tailscaled: typed node configs
// rendered to the config file format (Node.YAML), `meshd join` child
// processes with their logs (Env, Proc), readiness read from the control
// socket (Want, WaitReady), loopback ports free for TCP and UDP
// (FreePorts), network-namespace topologies (Topo: namespaces, veth
// pairs, routes, a router star, nftables rules), the bench's two
// namespaces joined by a veth pair (Netns), and plain wireguard-go on a
// kernel TUN device as the reference for what WireGuard itself costs
// (WGRef). It knows nothing of what is measured over the nodes:
// internal/bench does that. The e2e tests use the same configs,
// processes, ports and topologies.
package lab

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Node is the config of one node, in the keys of the config file (README,
// "Configuration"). Zero fields are left out, so the node's defaults
// apply; Extra is appended verbatim for keys this type does not have.
type Node struct {
	Name, Site string
	DataDir    string
	KeyFile    string   // cluster.key_file
	Join       []string // cluster.join: seed gossip addresses, host:port

	GossipBind      string // gossip.bind, host:port
	GossipAdvertise string // gossip.advertise
	TunnelListen    string // tunnel.listen, host:port
	TunnelAdvertise string // tunnel.advertise
	TunnelMode      string // tunnel.mode: userspace or kernel

	RelayEnabled   bool   // relay.enabled
	RelayListen    string // relay.listen
	RelayAdvertise string // relay.advertise

	Exports []Export
	Imports []Import

	Socket        string // control.socket
	MetricsListen string // metrics.listen
	LogLevel      string // log.level
	LogFormat     string // log.format
	Failover      Failover
	PKI           PKI    // pki: the node's identity (README "Identity and policy")
	Limits        Limits // limits (README "Hostile input and limits")
	Extra         string // YAML appended as is (top-level keys, newline-terminated)
}

// PKI is the pki section: file paths, and refused fingerprints.
type PKI struct {
	CA, Cert, Key string
	Blocklist     []string
}

// Limits is the limits section.
type Limits struct {
	MaxStreamsPerPeer, MaxPeers int
}

// Export is one entry of exports.
type Export struct {
	Name, Target string
	Weight       int
	// CheckInterval and CheckTimeout are check.interval and check.timeout;
	// NoCheck writes check: false (the target is not checked).
	CheckInterval, CheckTimeout time.Duration
	NoCheck                     bool
	ProxyProtocol               string // proxy_protocol
	// Allow is the allow list of selectors; nil leaves the key out (everyone),
	// an empty non-nil list writes allow: [] (no one).
	Allow    []string
	MaxConns int // max_conns
}

// Import is one entry of imports.
type Import struct {
	Name, Listen   string
	Sites          []string
	Balance        string        // least_conn or round_robin
	ConnectTimeout time.Duration // connect_timeout
	MaxConns       int           // max_conns
	Rate           float64       // rate: new connections per second
	Burst          int           // burst
}

// Failover is the failover section.
type Failover struct {
	SessionTimeout, HoldDown, DrainGrace time.Duration
}

// YAML renders n as a config file.
func (n Node) YAML() string {
	var b strings.Builder
	kv := func(indent, key, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s%s: %s\n", indent, key, scalar(v))
		}
	}
	dur := func(indent, key string, d time.Duration) {
		if d > 0 {
			fmt.Fprintf(&b, "%s%s: %s\n", indent, key, d)
		}
	}
	num := func(indent, key string, v int) {
		if v != 0 {
			fmt.Fprintf(&b, "%s%s: %d\n", indent, key, v)
		}
	}
	kv("", "name", n.Name)
	kv("", "site", n.Site)
	kv("", "data_dir", n.DataDir)
	if n.KeyFile != "" || len(n.Join) > 0 {
		b.WriteString("cluster:\n")
		kv("  ", "key_file", n.KeyFile)
		if len(n.Join) > 0 {
			fmt.Fprintf(&b, "  join: %s\n", list(n.Join))
		}
	}
	if n.GossipBind != "" || n.GossipAdvertise != "" {
		b.WriteString("gossip:\n")
		kv("  ", "bind", n.GossipBind)
		kv("  ", "advertise", n.GossipAdvertise)
	}
	if n.TunnelListen != "" || n.TunnelAdvertise != "" || n.TunnelMode != "" {
		b.WriteString("tunnel:\n")
		kv("  ", "listen", n.TunnelListen)
		kv("  ", "advertise", n.TunnelAdvertise)
		kv("  ", "mode", n.TunnelMode)
	}
	if n.RelayEnabled || n.RelayListen != "" || n.RelayAdvertise != "" {
		fmt.Fprintf(&b, "relay:\n  enabled: %v\n", n.RelayEnabled)
		kv("  ", "listen", n.RelayListen)
		kv("  ", "advertise", n.RelayAdvertise)
	}
	if len(n.Exports) > 0 {
		b.WriteString("exports:\n")
		for _, e := range n.Exports {
			kv("  - ", "name", e.Name)
			kv("    ", "target", e.Target)
			num("    ", "weight", e.Weight)
			if e.NoCheck {
				b.WriteString("    check: false\n")
			} else if e.CheckInterval > 0 || e.CheckTimeout > 0 {
				b.WriteString("    check:\n")
				dur("      ", "interval", e.CheckInterval)
				dur("      ", "timeout", e.CheckTimeout)
			}
			kv("    ", "proxy_protocol", e.ProxyProtocol)
			if e.Allow != nil {
				fmt.Fprintf(&b, "    allow: %s\n", list(e.Allow))
			}
			num("    ", "max_conns", e.MaxConns)
		}
	}
	if len(n.Imports) > 0 {
		b.WriteString("imports:\n")
		for _, im := range n.Imports {
			kv("  - ", "name", im.Name)
			kv("    ", "listen", im.Listen)
			if len(im.Sites) > 0 {
				fmt.Fprintf(&b, "    sites: %s\n", list(im.Sites))
			}
			kv("    ", "balance", im.Balance)
			dur("    ", "connect_timeout", im.ConnectTimeout)
			num("    ", "max_conns", im.MaxConns)
			if im.Rate != 0 {
				fmt.Fprintf(&b, "    rate: %s\n", strconv.FormatFloat(im.Rate, 'f', -1, 64))
			}
			num("    ", "burst", im.Burst)
		}
	}
	if n.Socket != "" {
		b.WriteString("control:\n")
		kv("  ", "socket", n.Socket)
	}
	if n.MetricsListen != "" {
		b.WriteString("metrics:\n")
		kv("  ", "listen", n.MetricsListen)
	}
	if f := n.Failover; f != (Failover{}) {
		b.WriteString("failover:\n")
		dur("  ", "session_timeout", f.SessionTimeout)
		dur("  ", "hold_down", f.HoldDown)
		dur("  ", "drain_grace", f.DrainGrace)
	}
	if n.LogLevel != "" || n.LogFormat != "" {
		b.WriteString("log:\n")
		kv("  ", "level", n.LogLevel)
		kv("  ", "format", n.LogFormat)
	}
	if p := n.PKI; p.CA != "" || p.Cert != "" || p.Key != "" || len(p.Blocklist) > 0 {
		b.WriteString("pki:\n")
		kv("  ", "ca", p.CA)
		kv("  ", "cert", p.Cert)
		kv("  ", "key", p.Key)
		if len(p.Blocklist) > 0 {
			fmt.Fprintf(&b, "  blocklist: %s\n", list(p.Blocklist))
		}
	}
	if l := n.Limits; l != (Limits{}) {
		b.WriteString("limits:\n")
		num("  ", "max_streams_per_peer", l.MaxStreamsPerPeer)
		num("  ", "max_peers", l.MaxPeers)
	}
	b.WriteString(n.Extra)
	return b.String()
}

// plain matches the scalars written without quotes: names, paths,
// host:port with a plain host.
var plain = regexp.MustCompile(`^[A-Za-z0-9_./-][A-Za-z0-9_./:@+-]*$`)

// scalar writes s plain when YAML reads it back as the same string, else
// double-quoted (Go's quoting of printable text is valid YAML).
func scalar(s string) string {
	_, errF := strconv.ParseFloat(s, 64)
	_, errI := strconv.ParseInt(s, 0, 64)
	if plain.MatchString(s) && !strings.HasSuffix(s, ":") && errF != nil && errI != nil {
		switch strings.ToLower(s) {
		case "true", "false", "yes", "no", "on", "off", "null", "~":
		default:
			return s
		}
	}
	return strconv.Quote(s)
}

// list writes a flow sequence of double-quoted strings.
func list(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
