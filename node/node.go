// Package node runs one meshd node: it wires gossip membership to the
// WireGuard tunnel's peers and to the service catalog, serves the node's
// imports (local listeners) and exports (streams from peers dialled to a
// local target), and answers the control socket.
//
// Node is the only package that knows gossip, tunnel and failover at once;
// they never import each other. There is no package-level state: several
// nodes run in one process (meshd demo, tests).
package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/cert"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/metrics"
	"github.com/meshd/meshd/internal/pace"
	"github.com/meshd/meshd/internal/statuspage"
	"github.com/meshd/meshd/internal/version"
	"github.com/meshd/meshd/tunnel"
)

// leaveTimeout bounds the graceful leave broadcast on Close.
const leaveTimeout = 2 * time.Second

// pacePlainUnder: the node's timers shorter than this are plain timers
// (busy peers' 100-200 ms health passes, pings and probes); longer ones
// (idle passes, pings and probes of quiet peers, 500 ms and more) wait for
// the pacer's beat, memberlist's UDP messages, at least one every 2 s (gossip.BeatInterval).
const pacePlainUnder = 400 * time.Millisecond

// Node is one running mesh node. Create it with New, run it with Start,
// stop it with Close.
type Node struct {
	// immutable after New
	cfg *config.Config
	log *slog.Logger

	broken brokenConnLog // connections that ended with an error

	// set by Start, immutable afterwards
	priv       key.PrivateKey
	pub        key.PublicKey
	tun        *tunnel.Tunnel
	gsp        *gossip.Gossip
	ctl        *controlServer
	mtr        *metricsServer         // nil unless metrics.listen is set
	rly        *relayServer           // nil unless relay.enabled
	metrics    *metrics.Metrics       // always set; served only with metrics.listen
	relayStats relayClientStats       // the relay client's counters, for metrics
	drills     *statuspage.Ring       // the last drills run from this node, for the status page
	health     *failover.Health       // peer usability with failback hold-down
	breaker    *failover.Breaker      // per service/node circuit breaker
	holes      *failover.Blackhole    // drill orders this node is executing
	idle       *failover.IdleSessions // idle close of the sessions this node owns
	pacer      *pace.Pacer            // the beat of the unhurried loops: memberlist's UDP messages (gossip.Config.Pacer)
	warmLimit  int                    // warm-set cap per import
	ctx        context.Context        // cancelled by Close: ends every proxied connection
	cancel     context.CancelFunc
	wg         sync.WaitGroup // goroutines started by Start

	signKey  ed25519.PrivateKey          // signs this node's gossip record and drill orders
	pki      atomic.Pointer[cert.Bundle] // nil without pki; replaced by reload
	refusals refusalLog                  // rate-limits the lines about refused nodes
	certs    certCache                   // parsed peer certificates

	catalog  atomic.Pointer[catalog]                // rebuilt on every gossip change
	warm     atomic.Pointer[map[key.PublicKey]bool] // the imports' warm sets, with the catalog
	draining atomic.Bool                            // Close has begun: exports refuse new streams
	maint    atomic.Bool                            // maintenance mode: exports withdrawn, new streams refused
	lim      *nodeLimits                            // README "Hostile input and limits" limits (limits.go)

	// What a reload changes (reload.go). n.cfg stays the config the node
	// started with, for what a reload may not change (name, site, addresses);
	// Config() is the one in force.
	live    atomic.Pointer[config.Config]
	exports atomic.Pointer[map[string]*exporter] // copy on write; read with exportMap()
	imports atomic.Pointer[[]*importer]          // copy on write; read with importList()
	pubMu   sync.Mutex                           // serialises publishExports

	reloadMu    sync.Mutex   // serialises Reload and OnReload
	hooks       []reloadHook // guarded by reloadMu
	retired     []*importer  // guarded by reloadMu; removed by a reload, may still have active connections
	retiredX    []*exporter  // guarded by reloadMu; likewise for exports (their active streams)
	reloadNotes []string     // guarded by reloadMu; changes of the reload in progress
	lastNotes   []string     // guarded by reloadMu; changes of the last successful reload

	mu         sync.Mutex
	started    bool                    // guarded by mu
	closed     bool                    // guarded by mu
	states     map[string]gossip.State // guarded by mu; last logged state per peer
	holeActive bool                    // guarded by mu; a drill's black hole is applied
	maintInfo  maintState              // guarded by mu; why and since when maint is on

	// rejoin.go
	fatal        chan error         // cap 1: the node must stop (name conflict)
	conflicted   atomic.Bool        // another live node has our name: close without leaving
	joinedAt     atomic.Int64       // unix ns of the first join (or of giving up on it)
	remembered   []rememberedMember // owned by watchGossip: last saved members
	rememberedAt time.Time          // owned by watchGossip
	alone        bool               // owned by watchGossip: no other member alive, logged
}

// New checks cfg and returns a node that is not running yet.
func New(cfg *config.Config, lg *slog.Logger) (*Node, error) {
	if cfg == nil {
		return nil, errors.New("node: nil config")
	}
	if len(cfg.Cluster.Key) == 0 {
		return nil, errors.New("node: no cluster key")
	}
	if lg == nil {
		lg = slog.Default()
	}
	n := &Node{cfg: cfg, log: lg, broken: brokenConnLog{log: lg, interval: time.Second}, states: make(map[string]gossip.State),
		health:  failover.NewHealth(failover.HealthConfig{HoldDown: cfg.Failover.HoldDown}),
		breaker: failover.NewBreaker(failover.DefaultBreakerConfig()),
		holes:   &failover.Blackhole{},
		drills:  statuspage.NewRing(statuspage.DefaultRingSize),
		idle:    failover.NewIdleSessions(sessionIdleTimeout()), warmLimit: warmLimit(),
		pacer: pace.New(gossip.BeatInterval(), pacePlainUnder),
	}
	n.metrics = metrics.New(metrics.Info{Node: cfg.Name, Site: cfg.Site, Version: version.Get().Short()}, n.metricsSample)
	n.fatal = make(chan error, 1)
	n.live.Store(cfg)
	n.lim = newNodeLimits()
	n.exports.Store(&map[string]*exporter{})
	n.imports.Store(&[]*importer{})
	return n, nil
}

// Config returns the configuration in force: the one the node started
// with, or the last one a reload applied. Callers must not modify it.
func (n *Node) Config() *config.Config { return n.live.Load() }

// exportMap returns this node's exports by name; the map is never
// modified (a reload stores a new one).
func (n *Node) exportMap() map[string]*exporter { return *n.exports.Load() }

// importList returns this node's imports; the slice is never modified.
func (n *Node) importList() []*importer { return *n.imports.Load() }

// Start brings the node up: node key, tunnel, gossip, exports, imports,
// control socket, then joins the mesh. On error everything already started
// is stopped again and nothing is left listening.
func (n *Node) Start() (err error) {
	n.mu.Lock()
	if n.started {
		n.mu.Unlock()
		return errors.New("node: already started")
	}
	n.started = true
	n.mu.Unlock()

	var undo rollback
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	n.ctx, n.cancel = context.WithCancel(context.Background())
	undo.add(n.cancel)
	// In this order: gossip advertises the tunnel's and the relay's
	// addresses and publishes the exports' first health.
	for _, step := range []func(*rollback) error{
		n.openKeys, n.openTunnel, n.openExports, n.openRelay, n.openGossip,
		n.openImports, n.openMetrics, n.openControl,
	} {
		if err = step(&undo); err != nil {
			return err
		}
	}
	n.runLoops()
	n.log.Info("node started", "name", n.cfg.Name, "site", n.cfg.Site,
		"gossip", n.gsp.LocalAddr(), "tunnel", n.tun.LocalAddr(), "mesh_ip", n.tun.MeshIP(),
		"exports", len(n.exportMap()), "imports", len(n.importList()))
	return nil
}

// rollback is what Start undoes, last first, when a later step fails.
type rollback []func()

func (r *rollback) add(f func()) { *r = append(*r, f) }

func (r rollback) run() {
	for i := len(r) - 1; i >= 0; i-- {
		r[i]()
	}
}

// openKeys loads the node's keys (nothing to undo).
func (n *Node) openKeys(*rollback) error { return n.loadKeys() }

// openTunnel starts the WireGuard tunnel.
func (n *Node) openTunnel(undo *rollback) error {
	tun, err := tunnel.New(tunnel.Config{
		PrivateKey:     n.priv,
		Listen:         n.cfg.Tunnel.Listen,
		Mode:           n.cfg.Tunnel.Mode,
		Logger:         n.log,
		HandleStream:   n.handleStream,
		SessionTimeout: n.cfg.Failover.SessionTimeout,
		ClusterKey:     n.cfg.Cluster.Key,
		PeerName:       n.peerName,
		Pacer:          n.pacer,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.tun = tun
	undo.add(func() { n.tun.Close() })
	n.tun.SetClusterKeys(n.cfg.Cluster.Keys) // every key of the file verifies (rotation)
	return nil
}

// openExports creates the exports and checks each once, so that the
// first catalog gossip publishes reflects real health. Their check loops
// start with runLoops.
func (n *Node) openExports(*rollback) error {
	exps := make(map[string]*exporter, len(n.cfg.Exports))
	for _, e := range n.cfg.Exports {
		exps[e.Name] = newExporter(n, e)
	}
	for _, e := range exps {
		e.checkOnce()
	}
	n.exports.Store(&exps)
	return nil
}

// openRelay starts this node's relay server (relay.enabled).
func (n *Node) openRelay(undo *rollback) error {
	if !n.cfg.Relay.Enabled {
		return nil
	}
	rly, err := startRelayServer(n)
	if err != nil {
		return err
	}
	n.rly = rly
	undo.add(func() { n.rly.close() })
	return nil
}

// openGossip starts gossip, quiet until the join (rejoin.go), and
// publishes the exports.
func (n *Node) openGossip(undo *rollback) error {
	gsp, err := gossip.New(gossip.Config{
		Name:      n.cfg.Name,
		Bind:      n.cfg.Gossip.Bind,
		Advertise: n.cfg.Gossip.Advertise,
		Key:       n.cfg.Cluster.Key,
		Keys:      n.cfg.Cluster.Keys,
		Meta: gossip.Meta{Site: n.cfg.Site, PublicKey: n.pub, Tunnel: n.tunnelAdvertise(), Relay: n.relayAdvertise(),
			Version: version.Get().Short()},
		Logger:   n.log,
		Quiet:    true, // until the join shows the name is ours (rejoin.go)
		SignKey:  n.signKey,
		Cert:     n.ownCert(),
		Identity: n.identityCheck(),
		Pacer:    n.pacer,
		// Members beyond max_peers get no tunnel state; gossip itself
		// keeps at most four times as many (SPEC §9), fixed at start.
		MaxMembers: 4 * maxPeers(n.cfg),
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.gsp = gsp
	undo.add(func() { n.gsp.Close() })
	n.publishExports()
	n.rebuildCatalog()
	return nil
}

// openImports binds every import's listener; they accept from runLoops on.
func (n *Node) openImports(undo *rollback) error {
	var imps []*importer
	for _, ic := range n.cfg.Imports {
		im, err := newImporter(n, ic)
		if err != nil {
			return err
		}
		imps = append(imps, im)
		undo.add(im.close)
	}
	n.imports.Store(&imps)
	return nil
}

// openMetrics starts the metrics and status page server (metrics.listen).
func (n *Node) openMetrics(undo *rollback) error {
	if n.cfg.Metrics.Listen == "" {
		return nil
	}
	mtr, err := startMetrics(n, n.cfg.Metrics.Listen)
	if err != nil {
		return err
	}
	n.mtr = mtr
	undo.add(func() { n.mtr.close() })
	return nil
}

// openControl starts the control socket.
func (n *Node) openControl(undo *rollback) error {
	ctl, err := startControl(n, n.cfg.Control.Socket)
	if err != nil {
		return err
	}
	n.ctl = ctl
	undo.add(func() { n.ctl.close() })
	return nil
}

// runLoops registers the reload hooks and starts the node's goroutines,
// the join last.
func (n *Node) runLoops() {
	n.OnReload("cluster keys", n.reloadClusterKeys)
	n.OnReload("pki", n.reloadPKI)
	n.goFunc(n.watchGossip)
	n.goFunc(n.watchHealth)
	n.goFunc(n.watchSessions)
	n.goFunc(n.receiveDrills)
	n.goFunc(n.relayLoop)
	for _, e := range n.exportMap() {
		n.goFunc(e.checkLoop)
	}
	for _, im := range n.importList() {
		n.goFunc(im.serve)
	}
	n.goFunc(n.joinLoop)
}

// tunnelAdvertise is the WireGuard endpoint others should use:
// tunnel.advertise, else the bound tunnel.listen address. An unspecified IP
// (0.0.0.0) is advertised as is; peers replace it with the IP they see
// this node's gossip come from.
func (n *Node) tunnelAdvertise() netip.AddrPort {
	if n.cfg.Tunnel.Advertise.IsValid() {
		return n.cfg.Tunnel.Advertise
	}
	return n.tun.LocalAddr()
}

func (n *Node) gossipAdvertise() netip.AddrPort {
	if n.gsp != nil {
		return n.gsp.LocalAddr()
	}
	return n.cfg.Gossip.Advertise
}

// goFunc runs f in a goroutine owned by the node (Close waits for it).
func (n *Node) goFunc(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Close shuts the node down gracefully: it stops accepting import
// connections, withdraws its exports from the catalog and refuses new
// streams (importers go to the next endpoint), lets active connections
// finish for up to failover.drain_grace, then leaves the mesh (others see
// `left`), ends what is left and waits for its goroutines. Safe to call
// twice and on a node whose Start failed.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed || !n.started || n.ctx == nil || n.ctl == nil {
		n.closed = true
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()

	if n.conflicted.Load() {
		// Not our name: no drain, and no leave that would speak for the
		// other node.
		n.reloadMu.Lock()
		n.draining.Store(true)
		n.reloadMu.Unlock()
		for _, im := range n.importList() {
			im.close()
		}
	} else {
		n.drain(n.Config().Failover.DrainGrace)
		if err := n.gsp.Leave(leaveTimeout); err != nil {
			n.log.Warn("leave mesh", "err", err)
		}
	}
	n.ctl.close()
	if n.mtr != nil {
		n.mtr.close()
	}
	n.cancel()
	if n.rly != nil {
		n.rly.close()
	}
	n.tun.Close()
	n.gsp.Close()
	n.wg.Wait()
	n.log.Info("node stopped", "name", n.cfg.Name)
	return nil
}

// drain withdraws the node from service and waits, up to grace, for its
// active connections (served streams and import clients) to finish.
func (n *Node) drain(grace time.Duration) {
	n.reloadMu.Lock() // no reload from here on: the lists below stay as they are
	n.draining.Store(true)
	imps := append(n.importList(), n.retired...)
	retiredX := n.retiredX
	n.reloadMu.Unlock()
	for _, im := range imps {
		im.close()
	}
	start := time.Now()
	exps := n.exportMap()
	withdrew := len(exps) > 0 && !n.maint.Load()
	if withdrew {
		n.publishExports()
	}
	active := func() int64 {
		var a int64
		for _, e := range exps {
			a += e.active.Load()
		}
		for _, e := range retiredX {
			a += e.active.Load()
		}
		for _, im := range imps {
			a += im.active.Load()
		}
		return a
	}
	if a := active(); a > 0 {
		n.log.Info("draining: waiting for active connections", "active", a, "grace", grace)
	}
	for {
		a := active()
		if (failover.Drain{Active: a, Elapsed: time.Since(start), Grace: grace, Withdrew: withdrew, LivePeers: n.hasLivePeers}).Over() {
			if a > 0 {
				n.log.Warn("drain grace over; closing active connections", "active", a)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hasLivePeers reports whether any other node might still send us streams.
func (n *Node) hasLivePeers() bool {
	for _, m := range n.catalog.Load().members {
		if m.State == gossip.StateAlive || m.State == gossip.StateSuspect {
			return true
		}
	}
	return false
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// PublicKey returns the node's WireGuard public key (valid after Start).
func (n *Node) PublicKey() key.PublicKey { return n.pub }

// GossipAddr returns the address other nodes join (valid after Start).
func (n *Node) GossipAddr() netip.AddrPort { return n.gossipAdvertise() }

// ImportAddr returns the bound address of the named import ("" if none).
func (n *Node) ImportAddr(name string) string {
	for _, im := range n.importList() {
		if im.cfg().Name == name {
			return im.ln.Addr().String()
		}
	}
	return ""
}

// isClosedErr reports whether err just means "shutting down".
func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, tunnel.ErrClosed)
}
