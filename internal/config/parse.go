package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// parser walks the yaml.Node tree so that every error carries a line.
type parser struct {
	file string
}

func (p *parser) errf(line int, key, format string, args ...any) *Error {
	return &Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Allowed keys of each mapping, in the order README "Configuration reference" lists them.
var (
	topKeys      = []string{"name", "site", "data_dir", "cluster", "gossip", "tunnel", "relay", "exports", "imports", "failover", "pki", "limits", "control", "metrics", "log"}
	clusterKeys  = []string{"key_file", "key", "join"}
	gossipKeys   = []string{"bind", "advertise"}
	tunnelKeys   = []string{"listen", "advertise", "mode"}
	relayKeys    = []string{"enabled", "listen", "advertise"}
	exportKeys   = []string{"name", "target", "check", "weight", "allow", "max_conns", "proxy_protocol"}
	checkKeys    = []string{"interval", "timeout"}
	importKeys   = []string{"name", "listen", "sites", "balance", "connect_timeout", "max_conns", "rate", "burst"}
	controlKeys  = []string{"socket"}
	metricsKeys  = []string{"listen"}
	logKeys      = []string{"level", "format"}
	limitsKeys   = []string{"max_streams_per_peer", "max_peers"}
	failoverKeys = []string{"session_timeout", "hold_down", "drain_grace"}
	pkiKeys      = []string{"ca", "cert", "key", "blocklist"}
)

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a yaml.v3 error into an *Error with the line it names.
func (p *parser) syntaxError(err error) *Error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return p.errf(line, "", "invalid YAML: %s", m[2])
	}
	return p.errf(0, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

// parse decodes data and fills a Config with the file's values and the
// defaults that do not depend on overrides.
func (p *parser) parse(data []byte) (*Config, fileLines, error) {
	var fl fileLines
	cfg := &Config{
		Path:   p.file,
		Gossip: Gossip{Bind: mustAddr(DefaultGossipBind)},
		Tunnel: Tunnel{Listen: mustAddr(DefaultTunnelListen), Mode: ModeUserspace},
		Relay:  Relay{Listen: mustAddr(DefaultRelayListen)},
		Log:    Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Failover: Failover{SessionTimeout: DefaultSessionTimeout, HoldDown: DefaultHoldDown,
			DrainGrace: DefaultDrainGrace},
		Limits: Limits{MaxStreamsPerPeer: DefaultMaxStreamsPerPeer, MaxPeers: DefaultMaxPeers},
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fl, p.syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fl, p.errf(extra.Line, "", "a second YAML document (---) is not allowed; put one node's config in one document")
	} else if !errors.Is(err, io.EOF) {
		return nil, fl, p.syntaxError(err)
	}

	var root *yaml.Node
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = resolve(doc.Content[0])
	}
	if root == nil || isNull(root) {
		return cfg, fl, nil // empty file: defaults only
	}
	fields, err := p.mapping(root, "", topKeys)
	if err != nil {
		return nil, fl, err
	}
	for _, f := range fields {
		switch f.name {
		case "name":
			cfg.Name, err = p.name(f.val, f.path, false)
		case "site":
			cfg.Site, err = p.name(f.val, f.path, false)
		case "data_dir":
			cfg.DataDir, err = p.str(f.val, f.path)
		case "cluster":
			fl.cluster = f.key.Line
			err = p.cluster(f.val, f.path, cfg, &fl)
		case "gossip":
			err = p.gossip(f.val, f.path, cfg)
		case "tunnel":
			err = p.tunnel(f.val, f.path, cfg)
		case "relay":
			err = p.relay(f.val, f.path, cfg)
		case "exports":
			err = p.exports(f.val, f.path, cfg)
		case "imports":
			err = p.imports(f.val, f.path, cfg)
		case "control":
			err = p.control(f.val, f.path, cfg)
		case "metrics":
			err = p.metrics(f.val, f.path, cfg)
		case "log":
			err = p.log(f.val, f.path, cfg)
		case "failover":
			err = p.failover(f.val, f.path, cfg)
		case "pki":
			fl.pki = f.key.Line
			err = p.pki(f.val, f.path, cfg, &fl)
		case "limits":
			err = p.limits(f.val, f.path, cfg)
		}
		if err != nil {
			return nil, fl, err
		}
	}
	return cfg, fl, nil
}

func (p *parser) cluster(n *yaml.Node, path string, cfg *Config, fl *fileLines) error {
	fields, err := p.mapping(n, path, clusterKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		switch f.name {
		case "key_file":
			fl.keyFile = f.key.Line
			cfg.Cluster.KeyFile, err = p.str(f.val, f.path)
		case "key":
			fl.key = f.key.Line
			fl.keyValue, err = p.str(f.val, f.path)
		case "join":
			var items []*yaml.Node
			items, err = p.list(f.val, f.path, "gossip host:port addresses like [\"10.0.1.5:7946\"]")
			for i, it := range items {
				if err != nil {
					break
				}
				key := fmt.Sprintf("%s[%d]", f.path, i)
				var s string
				if s, err = p.str(it, key); err != nil {
					break
				}
				if e := checkHostPort(s, false); e != nil {
					err = p.errf(it.Line, key, "%q %v", s, e)
					break
				}
				cfg.Cluster.Join = append(cfg.Cluster.Join, s)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) gossip(n *yaml.Node, path string, cfg *Config) error {
	fields, err := p.mapping(n, path, gossipKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		switch f.name {
		case "bind":
			err = p.addr(f.val, f.path, addrBind, DefaultGossipBind, &cfg.Gossip.Bind)
		case "advertise":
			err = p.addr(f.val, f.path, addrAdvertise, "203.0.113.9:7946", &cfg.Gossip.Advertise)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) tunnel(n *yaml.Node, path string, cfg *Config) error {
	fields, err := p.mapping(n, path, tunnelKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		switch f.name {
		case "listen":
			err = p.addr(f.val, f.path, addrBind, DefaultTunnelListen, &cfg.Tunnel.Listen)
		case "advertise":
			err = p.addr(f.val, f.path, addrAdvertise, "203.0.113.9:51820", &cfg.Tunnel.Advertise)
		case "mode":
			err = p.enum(f.val, f.path, &cfg.Tunnel.Mode, ModeUserspace, ModeKernel)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) relay(n *yaml.Node, path string, cfg *Config) error {
	fields, err := p.mapping(n, path, relayKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		switch f.name {
		case "enabled":
			err = p.boolean(f.val, f.path, &cfg.Relay.Enabled)
		case "listen":
			err = p.addr(f.val, f.path, addrBind, DefaultRelayListen, &cfg.Relay.Listen)
		case "advertise":
			err = p.addr(f.val, f.path, addrAdvertise, "203.0.113.9:7947", &cfg.Relay.Advertise)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) control(n *yaml.Node, path string, cfg *Config) error {
	fields, err := p.mapping(n, path, controlKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		if f.name == "socket" {
			if cfg.Control.Socket, err = p.str(f.val, f.path); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *parser) metrics(n *yaml.Node, path string, cfg *Config) error {
	fields, err := p.mapping(n, path, metricsKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		if f.name == "listen" {
			s, err := p.str(f.val, f.path)
			if err != nil {
				return err
			}
			if s != "" {
				if e := checkHostPort(s, true); e != nil {
					return p.errf(f.val.Line, f.path, "%q %v (like 127.0.0.1:9469; empty disables metrics)", s, e)
				}
			}
			cfg.Metrics.Listen = s
		}
	}
	return nil
}

func (p *parser) log(n *yaml.Node, path string, cfg *Config) error {
	fields, err := p.mapping(n, path, logKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		switch f.name {
		case "level":
			err = p.enum(f.val, f.path, &cfg.Log.Level, "debug", "info", "warn", "error")
		case "format":
			err = p.enum(f.val, f.path, &cfg.Log.Format, "text", "json")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) failover(n *yaml.Node, path string, cfg *Config) error {
	fields, err := p.mapping(n, path, failoverKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		switch f.name {
		case "session_timeout":
			cfg.Failover.SessionTimeout, err = p.duration(f.val, f.path, DefaultSessionTimeout)
		case "hold_down":
			cfg.Failover.HoldDown, err = p.duration(f.val, f.path, DefaultHoldDown)
		case "drain_grace":
			cfg.Failover.DrainGrace, err = p.duration(f.val, f.path, DefaultDrainGrace)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// duration reads a Go duration > 0; null means def.
func (p *parser) duration(n *yaml.Node, path string, def time.Duration) (time.Duration, error) {
	r := resolve(n)
	if isNull(r) {
		return def, nil
	}
	if r.Kind != yaml.ScalarNode {
		return 0, p.errf(n.Line, path, "got %s; want a Go duration > 0 like 2s or 500ms", describe(r))
	}
	d, err := time.ParseDuration(r.Value)
	if err != nil || d <= 0 {
		return 0, p.errf(n.Line, path, "%q is not allowed; want a Go duration > 0 like 2s or 500ms", r.Value)
	}
	return d, nil
}

func (p *parser) limits(n *yaml.Node, path string, cfg *Config) error {
	fields, err := p.mapping(n, path, limitsKeys)
	if err != nil {
		return err
	}
	for _, f := range fields {
		var v int
		switch f.name {
		case "max_streams_per_peer":
			if v, err = p.count(f.val, f.path, "concurrent streams per peer", MaxConnsLimit); err == nil && v > 0 {
				cfg.Limits.MaxStreamsPerPeer = v
			}
		case "max_peers":
			if v, err = p.count(f.val, f.path, "peers given tunnel state", MaxConnsLimit); err == nil && v > 0 {
				cfg.Limits.MaxPeers = v
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// count reads a limit: an integer 0..max, 0 meaning the default or none;
// null means 0.
func (p *parser) count(n *yaml.Node, path, what string, max int) (int, error) {
	r := resolve(n)
	if isNull(r) {
		return 0, nil
	}
	var v int
	if r.Kind != yaml.ScalarNode || r.Tag != "!!int" || r.Decode(&v) != nil || v < 0 || v > max {
		return 0, p.errf(n.Line, path, "%s is not allowed; want a number of %s, an integer 0..%d (0: no limit or the default)", describe(r), what, max)
	}
	return v, nil
}
