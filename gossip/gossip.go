// Package gossip is meshd's membership layer: hashicorp/memberlist, encrypted
// with the cluster key, carrying each node's record (site, WireGuard public
// key, tunnel and relay endpoints) in its node meta and the export catalog in
// versioned broadcasts plus push/pull state.
//
// A Gossip tracks every other node it has heard of, with a state (alive,
// suspect, dead, left) and the time that state began. Dead and left nodes stay
// listed for Config.RetainGone; dead ones are retried periodically so that a
// healed partition reconverges without help. Each node is authoritative for
// its own exports; a newer version of a node's catalog always replaces an
// older one and stale state never wins.
//
// All methods are safe for concurrent use. Changes signals that Members may
// have changed; callers re-read Members.
package gossip

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/pace"
)

// Meta is the record each node publishes about itself in its memberlist node
// meta.
type Meta struct {
	Site      string
	PublicKey key.PublicKey
	Tunnel    netip.AddrPort // WireGuard UDP endpoint others should use
	Relay     netip.AddrPort // relay TCP endpoint; zero when this node is not a relay
	Version   string         // the node's meshd build (version.Info.Short), at most maxVersionLen bytes; "" from older nodes
}

// State is a member's liveness as seen by this node.
type State int

// Member states. Suspect means a probe of the node failed and memberlist is
// waiting for it to refute; dead means it failed; left means it said goodbye.
const (
	StateAlive State = iota
	StateSuspect
	StateDead
	StateLeft
)

// String returns "alive", "suspect", "dead" or "left".
func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Export is one entry of a node's service catalog.
type Export struct {
	Name    string
	Weight  int
	Healthy bool
}

// Member is a node as seen by this node.
type Member struct {
	Name    string
	Addr    netip.AddrPort // gossip address
	Meta    Meta           // zero if the node's meta could not be read
	State   State
	Since   time.Time     // when State last changed (local clock)
	RTT     time.Duration // last gossip probe round trip; 0 if none yet
	Exports []Export      // latest catalog of this node (nil if unknown); a copy the caller may keep
	Cert    []byte        // the certificate in its signed record (nil if none); do not modify
	Signed  bool          // Meta comes from the node's signed record (not memberlist's unsigned meta)
	SignKey []byte        // Ed25519 public key that signed its record (nil if none); do not modify
}

// reconnectBatch bounds how many dead members are retried per interval.
const reconnectBatch = 3

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("gossip: closed")

// Gossip is one node's membership in the mesh.
type Gossip struct {
	// Immutable after New.
	name       string
	meta       Meta
	metaBytes  []byte
	log        *slog.Logger
	retainGone time.Duration
	reconnect  time.Duration
	probe      time.Duration // memberlist ProbeInterval
	maxMembers int           // Config.MaxMembers
	pacer      *pace.Pacer   // nil: plain timers
	suspectMax time.Duration // longest memberlist keeps a node suspect (per member count 1)
	started    time.Time
	signKey    ed25519.PrivateKey
	signPub    ed25519.PublicKey
	identity   func(name string, meta Meta, cert []byte, signKey ed25519.PublicKey) error
	keyring    *memberlist.Keyring
	ml         *memberlist.Memberlist
	// wake is ml once created, for queueLocked, which memberlist's
	// listeners may reach (a record passed on) before g.ml is set.
	wake      atomic.Pointer[memberlist.Memberlist]
	polls     atomic.Uint64 // Stats.Polls
	localAddr netip.AddrPort
	queue     *broadcastQueue
	limit     *limiter
	gate      *logGate        // log lines unauthenticated senders can cause
	guard     *guardTransport // caps unauthenticated gossip input
	count     *countTransport // counts gossip bytes on the wire
	changes   chan struct{}   // cap 1, never closed
	bigKick   chan struct{}   // cap 1: own record too big for UDP, send by TCP
	catchKick chan syncKick   // cap 1: a change that calls for catch-up syncs (catchup.go)
	userMsgs  chan []byte     // bounded; user messages for Messages()
	done      chan struct{}   // closed by Close
	wg        sync.WaitGroup

	// Atomic.
	numNodes  atomic.Int64  // alive+suspect members plus this node, for the broadcast queue
	malformed atomic.Uint64 // malformed catalog input ignored (Stats)
	capped    atomic.Uint64 // alive messages for new names ignored at MaxMembers
	closed    atomic.Bool
	quiet     atomic.Bool                    // own catalog record held back until Announce (Config.Quiet)
	conflict  atomic.Pointer[netip.AddrPort] // another node claiming our name, first seen (conflict.go)

	lifeMu sync.Mutex // serialises Leave and Close (memberlist.Leave panics after Shutdown)

	mu sync.Mutex
	// Guarded by mu.
	version uint64   // own catalog version
	exports []Export // own catalog
	leaving bool     // Leave was called
	leftAt  time.Time
	cert    []byte  // own certificate
	own     *record // own record signed, for version/leaving; nil when stale
	peers   map[string]*peer
	catalog map[string]*catalogEntry // by node name; may hold names not (yet) in peers
}

// New creates the memberlist (listening on cfg.Bind) and starts the owned
// goroutines. Call Join to contact other nodes and Close to stop.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if !cfg.Bind.IsValid() {
		cfg.Bind = netip.AddrPortFrom(netip.IPv4Unspecified(), DefaultBindPort)
	}
	if cfg.RetainGone == 0 {
		cfg.RetainGone = DefaultRetainGone
	}
	if cfg.ReconnectInterval == 0 {
		cfg.ReconnectInterval = DefaultReconnectInterval
	}
	metaBytes, _ := encodeMeta(cfg.Meta) // checked by Validate
	if cfg.SignKey == nil {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("gossip: signing key: %w", err)
		}
		cfg.SignKey = k
	}

	now := time.Now()
	g := &Gossip{
		name:       cfg.Name,
		pacer:      cfg.Pacer,
		meta:       cfg.Meta,
		metaBytes:  metaBytes,
		log:        cfg.Logger,
		retainGone: cfg.RetainGone,
		maxMembers: cmp.Or(cfg.MaxMembers, DefaultMaxMembers),
		reconnect:  cfg.ReconnectInterval,
		started:    now,
		signKey:    cfg.SignKey,
		signPub:    cfg.SignKey.Public().(ed25519.PublicKey),
		identity:   cfg.Identity,
		cert:       slices.Clone(cfg.Cert),
		limit:      newLimiter(limitEvery, limitKeys),
		changes:    make(chan struct{}, 1),
		bigKick:    make(chan struct{}, 1),
		catchKick:  make(chan syncKick, 1),
		userMsgs:   make(chan []byte, userQueueLength),
		done:       make(chan struct{}),
		version:    uint64(now.UnixNano()),
		exports:    []Export{},
		peers:      make(map[string]*peer),
		catalog:    make(map[string]*catalogEntry),
	}
	g.numNodes.Store(1)
	g.quiet.Store(cfg.Quiet)

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.Bind.Addr().Unmap().String()
	mc.BindPort = int(cfg.Bind.Port())
	mc.AdvertisePort = mc.BindPort
	if cfg.Advertise.IsValid() {
		mc.AdvertiseAddr = cfg.Advertise.Addr().Unmap().String()
		if cfg.Advertise.Port() != 0 {
			mc.AdvertisePort = int(cfg.Advertise.Port())
		}
	}
	mc.SecretKey = slices.Clone(cfg.Key)
	keys := cfg.Keys
	if len(keys) == 0 {
		keys = [][]byte{cfg.Key}
	}
	kr, err := memberlist.NewKeyring(keys, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring: %w", err)
	}
	mc.Keyring = kr
	g.keyring = kr
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	// Failure detection in seconds (a peer without a session is judged by
	// gossip alone; one with a session by its pings, within a second):
	// probes every 2 s with a 500 ms timeout (each probe's UDP message is
	// the beat of Config.Pacer), a 200 ms gossip tick while broadcasts are
	// queued (which spreads a catalog change through 100 nodes in about a
	// second and bounds how long Leave waits for its broadcast; the patched
	// memberlist skips the tick while nothing is queued), and suspicion
	// multiplier 2, so a suspect is declared dead after 2 × log10(N) × 2 s
	// (4 s up to 10 members, 8 s at 100, 12 s at 1,000): the minimum of
	// memberlist's LAN settings (1 s probes, multiplier 4), reached without
	// waiting for confirmations. A probe and the answers to others' probes
	// are most of an idle node's wakeups: probing every 2 s instead of 1 s
	// took a fifth off its CPU (README "Performance", fleet scale); the
	// price is that a failed member is first probed about a second later.
	// Compression is off: the UDP packets are small, and LZW's tables were
	// allocated for each. MESHD_DEBUG_GOSSIP_* measure others.
	mc.ProbeInterval = BeatInterval()
	mc.ProbeTimeout = debugDuration("MESHD_DEBUG_GOSSIP_PROBE_TIMEOUT", 500*time.Millisecond)
	mc.GossipInterval = TickInterval()
	mc.SuspicionMult = suspicionMult
	mc.PushPullInterval = 10 * time.Second
	mc.EnableCompression = os.Getenv("MESHD_DEBUG_GOSSIP_COMPRESS") == "1"
	mc.TCPTimeout = 2 * time.Second
	// A node that crashed and comes back from another address (DHCP, a
	// rescheduled VM) may take its name back once it has been dead this long.
	mc.DeadNodeReclaimTime = 10 * time.Second
	d := &delegate{g: g}
	mc.Delegate = d
	mc.Events = d
	mc.Alive = d
	mc.Conflict = d
	mc.Ping = d
	g.gate = newLogGate(g.log, g.limit)
	mc.Logger = log.New(&mlWriter{log: g.log, lim: g.limit, gate: g.gate, onSuspect: g.markSuspect, now: time.Now}, "", 0)
	inner := cfg.transport
	if inner == nil {
		nt, err := listenTransport(mc)
		if err != nil {
			return nil, fmt.Errorf("gossip: listen on %s: %w", cfg.Bind, err)
		}
		inner = nt
	}
	if p, ok := inner.(interface{ GetAutoBindPort() int }); ok && mc.BindPort == 0 {
		mc.BindPort = p.GetAutoBindPort()
		if mc.AdvertiseAddr == "" || mc.AdvertisePort == 0 {
			mc.AdvertisePort = mc.BindPort
		}
	}
	g.count = newCountTransport(inner)
	g.guard = newGuardTransport(g.count, g.gate.warn, cfg.guardTune)
	mc.Transport = g.guard

	g.probe = mc.ProbeInterval
	// memberlist's longest suspicion per log10(N): its minimum when it
	// waits for no confirmations, else SuspicionMaxTimeoutMult times that.
	g.suspectMax = time.Duration(mc.SuspicionMult) * mc.ProbeInterval
	if mc.SuspicionMult-2 >= 1 {
		g.suspectMax *= time.Duration(mc.SuspicionMaxTimeoutMult)
	}
	g.queue = newBroadcastQueue(func() int { return int(g.numNodes.Load()) }, mc.RetransmitMult)

	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = g.guard.Shutdown()
		return nil, fmt.Errorf("gossip: listen on %s: %w", cfg.Bind, err)
	}
	g.ml = ml
	g.wake.Store(ml)
	ml.WakeGossip() // for a record queued before
	ln := ml.LocalNode()
	if a, ok := netip.AddrFromSlice(ln.Addr); ok {
		g.localAddr = netip.AddrPortFrom(a.Unmap(), ln.Port)
	}

	g.wg.Add(4)
	go g.maintainLoop()
	go g.reconnectLoop()
	go g.sendLoop()
	go g.catchUpLoop()
	g.log.Debug("gossip: listening", "name", g.name, "addr", g.localAddr.String())
	return g, nil
}

// Local returns this node: alive (left after Leave), with its own exports.
func (g *Gossip) Local() Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := Member{
		Name:    g.name,
		Addr:    g.localAddr,
		Meta:    g.meta,
		State:   StateAlive,
		Since:   g.started,
		Exports: slices.Clone(g.exports),
	}
	if g.leaving {
		m.State, m.Since = StateLeft, g.leftAt
	}
	return m
}

// LocalAddr returns the gossip address others use to reach this node (with
// the real port when Bind's port was 0).
func (g *Gossip) LocalAddr() netip.AddrPort { return g.localAddr }

// Members returns every other node known, including suspect, dead and left
// ones still retained, sorted by name. The result is a deep copy.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	out := make([]Member, 0, len(g.peers))
	for _, p := range g.peers {
		m := Member{Name: p.name, Addr: p.addr, Meta: p.meta, State: p.state, Since: p.since, RTT: p.rtt}
		if c := g.catalog[p.name]; c != nil {
			m.Exports = slices.Clone(c.rec.exports)
			m.Cert = c.rec.cert
			m.SignKey = c.rec.signKey
			if !c.rec.meta.PublicKey.IsZero() {
				rm := c.rec.meta
				rm.Version = p.meta.Version // informational, not signed
				m.Meta, m.Signed = rm, true
			}
		}
		out = append(out, m)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// SetExports replaces this node's catalog and spreads it promptly. Entries
// the wire format cannot carry (empty or over-long names, more than 1024
// entries, more than 64 KiB in all) are dropped with an error log. After
// Leave the catalog is kept locally but no longer announced.
func (g *Gossip) SetExports(exps []Export) {
	g.mu.Lock()
	certLen := len(g.cert)
	g.mu.Unlock()
	clean, dropped := sanitizeExports(g.name, exps, certLen)
	if dropped > 0 {
		g.log.Error("gossip: exports dropped: empty or longer than 255 bytes, more than 1024, or more than 64 KiB in all",
			"dropped", dropped, "kept", len(clean))
	}
	g.mu.Lock()
	changed := !equalExports(g.exports, clean)
	g.exports = clean
	if changed && !g.leaving {
		g.bumpLocked()
		g.announceOwnLocked(nil)
	}
	g.mu.Unlock()
	if changed {
		g.notify()
	}
}

// SetKeys replaces the cluster keys (rotation, README "Identity and policy"): keys[0] encrypts
// from now on, every one decrypts; keys no longer listed are dropped. Each
// must be 16, 24 or 32 bytes.
func (g *Gossip) SetKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("gossip: no cluster key")
	}
	for _, k := range keys {
		switch len(k) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("gossip: cluster key of %d bytes", len(k))
		}
	}
	for _, k := range keys {
		if err := g.keyring.AddKey(k); err != nil {
			return fmt.Errorf("gossip: add key: %w", err)
		}
	}
	if err := g.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("gossip: use key: %w", err)
	}
	for _, old := range g.keyring.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, old) }) {
			if err := g.keyring.RemoveKey(old); err != nil {
				return fmt.Errorf("gossip: remove key: %w", err)
			}
		}
	}
	return nil
}

// SetCert replaces the certificate carried in this node's record (a renewed
// certificate on reload) and spreads it promptly.
func (g *Gossip) SetCert(cert []byte) error {
	if len(cert) > maxCertBytes {
		return fmt.Errorf("gossip: certificate of %d bytes exceeds %d", len(cert), maxCertBytes)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if bytes.Equal(cert, g.cert) {
		return nil
	}
	g.cert = slices.Clone(cert)
	if !g.leaving {
		g.bumpLocked()
		g.announceOwnLocked(nil)
	}
	return nil
}

// bumpLocked advances this node's record version; it never wraps.
func (g *Gossip) bumpLocked() {
	if g.version < math.MaxUint64 {
		g.version++
	}
	g.own = nil
}

// Changes returns a channel that receives a value after any member join,
// leave, state change, meta change or catalog change. It has room for one
// value, so a slow reader sees one signal for many changes; it is never
// closed.
func (g *Gossip) Changes() <-chan struct{} { return g.changes }

// Leave announces that this node is leaving: its catalog is withdrawn and
// other nodes see it as left rather than dead. It waits at most timeout
// (≤ 0: DefaultLeaveTimeout) for the announcement to go out. The node keeps
// gossiping until Close.
func (g *Gossip) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultLeaveTimeout
	}
	deadline := time.Now().Add(timeout)
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.closed.Load() {
		return ErrClosed
	}

	// First our catalog record with the leaving flag, so that receivers can
	// tell "left" from "dead" (memberlist's events do not say which).
	sent := make(chan struct{})
	g.mu.Lock()
	first := !g.leaving
	if first {
		g.leaving = true
		g.leftAt = time.Now()
		g.bumpLocked()
		g.announceOwnLocked(sent)
	}
	g.mu.Unlock()
	if first && g.numNodes.Load() > 1 {
		t := time.NewTimer(timeout / 2)
		select {
		case <-sent:
		case <-t.C:
		}
		t.Stop()
	}
	// memberlist.Leave waits forever when given 0 or less.
	if err := g.ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Close shuts memberlist down without a leave announcement (others will
// detect the failure; call Leave first to leave gracefully) and stops every
// goroutine. It is idempotent.
func (g *Gossip) Close() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.closed.Swap(true) {
		return nil
	}
	close(g.done)
	err := g.ml.Shutdown()
	g.wg.Wait()
	if err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	return nil
}

// listenTransport opens memberlist's network transport on mc's bind address
// (retrying a few times for an ephemeral port, as memberlist does: the TCP
// port it picks may be taken for UDP).
func listenTransport(mc *memberlist.Config) (*memberlist.NetTransport, error) {
	nc := &memberlist.NetTransportConfig{
		BindAddrs: []string{mc.BindAddr},
		BindPort:  mc.BindPort,
		Logger:    mc.Logger,
	}
	tries := 1
	if mc.BindPort == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			return nt, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

// notify signals Changes without blocking.
func (g *Gossip) notify() {
	select {
	case g.changes <- struct{}{}:
	default:
	}
}

// addrPort converts memberlist's address form.
func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), port)
}

// TickInterval is memberlist's gossip interval: how often a node sends
// queued broadcasts while it has some.
func TickInterval() time.Duration {
	return debugDuration("MESHD_DEBUG_GOSSIP_INTERVAL", 200*time.Millisecond)
}

// BeatInterval is memberlist's probe interval: a member probes another
// this often, and the UDP message it sends is a beat of Config.Pacer, so
// beats come at least this often while the node has another member.
func BeatInterval() time.Duration {
	return debugDuration("MESHD_DEBUG_GOSSIP_PROBE_INTERVAL", 2*time.Second)
}

// suspicionMult is memberlist's SuspicionMult (see New): with it at 2, a
// suspicion needs no confirmations (memberlist waits for SuspicionMult−2)
// and lasts suspicionMult × log10(N) × the probe interval.
const suspicionMult = 2

// debugDuration reads a tuning knob from the environment (MESHD_DEBUG_*,
// for measuring one setting against another in one run; not a stable
// interface): def when unset or not a duration between 10 ms and 10 s.
func debugDuration(name string, def time.Duration) time.Duration {
	d, err := time.ParseDuration(os.Getenv(name))
	if err != nil || d < 10*time.Millisecond || d > 10*time.Second {
		return def
	}
	return d
}
