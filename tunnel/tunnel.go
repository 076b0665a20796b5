// Package tunnel runs a node's WireGuard device (wireguard-go over a
// userspace gVisor netstack, or in kernel mode over a real TUN device and
// the kernel's TCP; see Stack) and what rides on it: one yamux session per
// peer over a TCP connection inside the tunnel, and the streams on it.
//
// Peers are named by their WireGuard public key. Each has a mesh address
// derived from that key (key.PublicKey.MeshIP), which WireGuard's
// cryptokey routing makes authentic: a TCP connection from a peer's mesh
// address can only come from the holder of its private key.
//
// Of each pair of peers, the one with the smaller public key dials the
// session and redials it with backoff when it breaks; the other accepts.
package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.zx2c4.com/wireguard/device"

	"github.com/meshd/meshd/internal/key"
)

// SessionPort is the TCP port inside the tunnel that carries yamux sessions.
const SessionPort = 7000

// DefaultMTU is the tunnel MTU: 1500 minus IPv6+UDP+WireGuard overhead.
const DefaultMTU = 1420

// Errors returned by Tunnel methods.
var (
	ErrClosed      = errors.New("tunnel: closed")
	ErrUnknownPeer = errors.New("tunnel: unknown peer")
)

// Config configures a Tunnel. Zero values mean defaults.
type Config struct {
	PrivateKey key.PrivateKey
	Listen     netip.AddrPort // WireGuard UDP address
	MTU        int            // default DefaultMTU
	Logger     *slog.Logger

	// Mode is ModeUserspace (default: a gVisor netstack in the process) or
	// ModeKernel (a TUN device; Linux and root only).
	Mode string
	// DeviceName names the kernel-mode TUN device (default
	// DefaultDeviceName of the node's key).
	DeviceName string
	openTUN    openTUNFunc // tests: replaces tun.CreateTUN

	// ClusterKey authenticates direct-path probes (see PathBind); without
	// it the direct path is always used.
	ClusterKey []byte
	// PeerName names a peer in logs and errors (the node's gossip name);
	// nil or "" falls back to a short form of the key. It must not block
	// and is called from the tunnel's goroutines.
	PeerName func(key.PublicKey) string

	// HandleStream is called, in its own goroutine, for every stream a peer
	// opens. It owns s and must close it.
	HandleStream func(peer key.PublicKey, s net.Conn)

	// SessionTimeout is how long a silent session is kept before it is
	// closed and redialled (default 15s). Streams ride out shorter stalls.
	SessionTimeout time.Duration
	// PingInterval is how often each session is pinged to measure RTT and
	// liveness (default 200ms).
	PingInterval time.Duration
}

// Peer is what SetPeers needs to know of a mesh node.
type Peer struct {
	PublicKey key.PublicKey
	Endpoint  netip.AddrPort // WireGuard UDP endpoint; zero if unknown
}

// PeerStats is a snapshot of one peer's tunnel state.
type PeerStats struct {
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero if never
	TxBytes       uint64
	RxBytes       uint64
	Path          string        // "direct", "relay" or "none"
	RelayVia      string        // the relay's name when Path is "relay"
	RTT           time.Duration // last session ping; 0 if unknown
	SRTT          time.Duration // smoothed session RTT; 0 if unknown
	LastPong      time.Time     // last answered session ping; zero if none
	PingPending   time.Time     // when the unanswered ping was sent; zero if none
	SessionUp     bool
	Streams       int
}

// Tunnel is one node's WireGuard device and its peer sessions.
type Tunnel struct {
	// immutable after New
	cfg    Config
	pub    key.PublicKey
	ip     netip.Addr
	log    *slog.Logger
	dev    *device.Device
	net    Stack
	bind   *PathBind
	ln     net.Listener
	ymxCfg *yamux.Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	peers  map[key.PublicKey]*peer // guarded by mu
	byIP   map[netip.Addr]*peer    // guarded by mu
	closed bool                    // guarded by mu
	holes  map[key.PublicKey]bool  // guarded by mu; black-holed peers
	ipcMu  sync.Mutex              // serialises IpcSet calls
}

// New creates the device, brings it up and starts accepting sessions.
func New(cfg Config) (*Tunnel, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 15 * time.Second
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandleStream == nil {
		cfg.HandleStream = func(_ key.PublicKey, s net.Conn) { s.Close() }
	}
	t := &Tunnel{
		cfg:   cfg,
		pub:   cfg.PrivateKey.Public(),
		log:   cfg.Logger,
		peers: make(map[key.PublicKey]*peer),
		byIP:  make(map[netip.Addr]*peer),
	}
	t.ip = t.pub.MeshIP()
	kn := readKnobs()
	kn.maxRetries = retriesFor(cfg.SessionTimeout, time.Duration(kn.maxRTO)*time.Millisecond)
	t.ymxCfg = yamuxConfig(cfg, t.log, kn.yamuxWindow)

	tdev, err := newStack(cfg, t.pub, t.ip, kn)
	if err != nil {
		return nil, err
	}
	t.net = tdev
	t.bind = NewPathBind(cfg.Listen, t.pub, cfg.ClusterKey, t.log)
	t.bind.SetPeerNamer(cfg.PeerName)
	t.bind.noOffload = !kn.udpOffload
	wlog := t.log.With("component", "wireguard")
	t.dev = device.NewDevice(tdev, t.bind, &device.Logger{
		Verbosef: func(f string, a ...any) { wlog.Debug(fmt.Sprintf(f, a...)) },
		Errorf:   func(f string, a ...any) { wlog.Debug(fmt.Sprintf(f, a...)) },
	})
	if err := t.dev.IpcSet("private_key=" + cfg.PrivateKey.Hex() + "\n"); err != nil {
		t.dev.Close()
		return nil, fmt.Errorf("tunnel: set private key: %w", err)
	}
	if err := t.dev.Up(); err != nil {
		t.dev.Close()
		return nil, fmt.Errorf("tunnel: bring device up on %s: %w", cfg.Listen, err)
	}
	ln, err := tdev.ListenTCP(netip.AddrPortFrom(t.ip, SessionPort))
	if err != nil {
		t.dev.Close()
		return nil, fmt.Errorf("tunnel: listen for sessions: %w", err)
	}
	t.ln = ln
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// PublicKey returns this node's public key.
func (t *Tunnel) PublicKey() key.PublicKey { return t.pub }

// MeshIP returns this node's mesh address.
func (t *Tunnel) MeshIP() netip.Addr { return t.ip }

// LocalAddr returns the bound WireGuard UDP address.
func (t *Tunnel) LocalAddr() netip.AddrPort { return t.bind.LocalAddr() }

// Close stops every session and the device. It is safe to call twice.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()

	t.cancel()
	t.ln.Close()
	for _, p := range peers {
		p.stop()
	}
	t.wg.Wait()
	t.dev.Close()
	return nil
}

// SetClusterKeys replaces the keys direct-path probes are authenticated
// with (cluster key rotation): the first signs, every one verifies.
func (t *Tunnel) SetClusterKeys(keys [][]byte) { t.bind.SetClusterKeys(keys) }

// SetPeers makes the device's peers exactly ps: new ones are added (and,
// where this node has the smaller key, a session dialer started), changed
// endpoints are updated, missing ones are removed with their sessions.
func (t *Tunnel) SetPeers(ps []Peer) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	want := make(map[key.PublicKey]Peer, len(ps))
	for _, p := range ps {
		if p.PublicKey != t.pub && !p.PublicKey.IsZero() {
			want[p.PublicKey] = p
		}
	}
	var uapi strings.Builder
	var removed, added []*peer
	for pub, p := range t.peers {
		if _, ok := want[pub]; !ok {
			fmt.Fprintf(&uapi, "public_key=%s\nremove=true\n", pub.Hex())
			delete(t.peers, pub)
			delete(t.byIP, p.ip)
			removed = append(removed, p)
			t.bind.RemovePeer(pub)
		}
	}
	for pub, w := range want {
		p, ok := t.peers[pub]
		if ok && p.endpoint == w.Endpoint {
			continue
		}
		t.bind.SetPeer(pub, w.Endpoint)
		if ok {
			p.endpoint = w.Endpoint
			continue // WireGuard's endpoint is the peer itself; the bind routes it
		}
		fmt.Fprintf(&uapi, "public_key=%s\nendpoint=%s\n", pub.Hex(), pub.Hex())
		if !ok {
			p = newPeer(t, pub)
			t.peers[pub] = p
			t.byIP[p.ip] = p
			added = append(added, p)
			fmt.Fprintf(&uapi, "replace_allowed_ips=true\nallowed_ip=%s/128\n", p.ip)
			if p.dialer {
				// Only the dialer initiates handshakes (a persistent
				// keepalive sends one at once). Two initiations crossing
				// on the wire cost a 5 s handshake retry. Session pings
				// keep NAT mappings warm both ways afterwards.
				uapi.WriteString("persistent_keepalive_interval=25\n")
			}
		}
		p.endpoint = w.Endpoint
	}
	t.updateBlockedLocked()
	t.mu.Unlock()

	var err error
	if uapi.Len() > 0 {
		t.ipcMu.Lock()
		err = t.dev.IpcSet(uapi.String())
		t.ipcMu.Unlock()
		if err != nil {
			err = fmt.Errorf("tunnel: configure peers: %w", err)
		}
	}
	for _, p := range removed {
		p.stop()
	}
	for _, p := range added {
		p.start()
	}
	return err
}

// SetBlackhole drops all tunnel traffic to and from the given peers (none:
// restore), as if their links were cut. Sessions are not told: they see
// silence, exactly as with a real outage.
func (t *Tunnel) SetBlackhole(peers []key.PublicKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.holes = make(map[key.PublicKey]bool, len(peers))
	for _, p := range peers {
		t.holes[p] = true
	}
	t.updateBlockedLocked()
}

func (t *Tunnel) updateBlockedLocked() {
	if len(t.holes) == 0 {
		t.bind.SetBlocked(nil)
		return
	}
	blocked := make(map[key.PublicKey]bool, len(t.holes))
	for pub := range t.holes {
		blocked[pub] = true
	}
	t.bind.SetBlocked(blocked)
}

// SetRelay makes r, the relay named name, the fallback path to peers whose
// direct path fails its probes; nil removes it.
func (t *Tunnel) SetRelay(r Relay, name string) { t.bind.SetRelay(r, name) }

// DeliverRelay passes a packet the relay brought from peer from to
// WireGuard. It never blocks.
func (t *Tunnel) DeliverRelay(from key.PublicKey, pkt []byte) { t.bind.DeliverRelay(from, pkt) }

// OpenStream opens a new stream to peer, waiting (until ctx ends) for the
// peer's session to come up if it is not up yet.
func (t *Tunnel) OpenStream(ctx context.Context, pub key.PublicKey) (net.Conn, error) {
	return t.DialStream(ctx, pub, nil)
}

// DialStream opens a new stream to peer and runs handshake on it (nil for
// none), all within ctx: the stream's deadline is ctx's while handshake
// runs, and when ctx ends first DialStream returns ctx's error at once.
//
// yamux's OpenStream and Write take no context and wait for the session's
// send loop, which a stalled session (a frozen peer, its send buffer full)
// holds for up to the session timeout. So the open and the handshake run
// in a goroutine of the tunnel's; one that outlives its caller closes the
// stream it got when the send loop lets it go.
func (t *Tunnel) DialStream(ctx context.Context, pub key.PublicKey, handshake func(net.Conn) error) (net.Conn, error) {
	t.mu.Lock()
	p, closed := t.peers[pub], t.closed
	if p != nil && !closed {
		t.wg.Add(1) // under mu: Close sets closed before it waits
	}
	t.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case p == nil:
		return nil, fmt.Errorf("%w %s", ErrUnknownPeer, t.bind.peerName(pub))
	}
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result) // unbuffered: a result is taken by the caller or dropped by the goroutine
	go func() {
		defer t.wg.Done()
		c, err := p.openStream(ctx)
		if err == nil && handshake != nil {
			err = runHandshake(ctx, c, handshake)
		}
		r := result{err: err}
		if err == nil {
			r.c = c
		}
		select {
		case done <- r:
			if err == nil {
				return // the caller's now
			}
		case <-ctx.Done():
		}
		if c != nil {
			c.Close() // may wait for a stalled send loop: after the caller has its answer
		}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("tunnel: open stream to %s: %w", t.bind.peerName(pub), ctx.Err())
	}
}

// runHandshake runs handshake on c with c's deadline at ctx's, cut short
// when ctx ends, and clears the deadline after a success.
func runHandshake(ctx context.Context, c net.Conn, handshake func(net.Conn) error) error {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	err := handshake(c)
	if !stop() {
		return fmt.Errorf("tunnel: stream handshake: %w", ctx.Err())
	}
	if err != nil {
		return err
	}
	c.SetDeadline(time.Time{})
	return nil
}

// SessionStats is the part of a peer's PeerStats that the data path
// keeps (session, pings, path, the bind's byte counters), without
// WireGuard's handshake time: cheap enough for every new connection and
// every metrics scrape (no UAPI lock). ok is false for an unknown peer.
func (t *Tunnel) SessionStats(pub key.PublicKey) (st PeerStats, ok bool) {
	t.mu.Lock()
	p := t.peers[pub]
	t.mu.Unlock()
	if p == nil {
		return PeerStats{}, false
	}
	st = p.stats()
	st.Path, st.RelayVia = t.bind.Path(pub)
	st.TxBytes, st.RxBytes = t.bind.Bytes(pub)
	return st, true
}

// AllSessionStats returns SessionStats for every peer: what metrics
// scrapes read, never taking WireGuard's UAPI lock.
func (t *Tunnel) AllSessionStats() map[key.PublicKey]PeerStats {
	t.mu.Lock()
	pubs := make([]key.PublicKey, 0, len(t.peers))
	for pub := range t.peers {
		pubs = append(pubs, pub)
	}
	t.mu.Unlock()
	out := make(map[key.PublicKey]PeerStats, len(pubs))
	for _, pub := range pubs {
		if st, ok := t.SessionStats(pub); ok {
			out[pub] = st
		}
	}
	return out
}

// Stats returns every peer's statistics, AllSessionStats plus WireGuard's
// handshake time and endpoint (read through its UAPI dump, which takes
// the device's locks: for status, not per connection or per scrape).
func (t *Tunnel) Stats() map[key.PublicKey]PeerStats {
	out := t.AllSessionStats()
	t.ipcMu.Lock()
	uapi, err := t.dev.IpcGet()
	t.ipcMu.Unlock()
	if err != nil {
		return out
	}
	parseUAPIStats(uapi, out)
	return out
}

// parseUAPIStats folds wireguard-go's UAPI "get" output into out.
func parseUAPIStats(uapi string, out map[key.PublicKey]PeerStats) {
	var cur key.PublicKey
	var have bool
	var sec, nsec int64
	flush := func() {
		if !have {
			return
		}
		if st, ok := out[cur]; ok {
			if sec != 0 || nsec != 0 {
				st.LastHandshake = time.Unix(sec, nsec).UTC()
			}
			out[cur] = st
		}
	}
	sc := bufio.NewScanner(strings.NewReader(uapi))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			flush()
			pk, err := key.ParsePublicHex(v)
			cur, have, sec, nsec = pk, err == nil, 0, 0
			continue
		}
		if !have {
			continue
		}
		st, ok := out[cur]
		if !ok {
			continue
		}
		switch k {
		case "endpoint":
			if ap, err := netip.ParseAddrPort(v); err == nil {
				st.Endpoint = ap
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
		out[cur] = st
	}
	flush()
}

// acceptLoop accepts session connections from peers that do not dial us
// through the smaller-key rule and hands each to its peer.
func (t *Tunnel) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() == nil {
				t.log.Warn("tunnel: accept session", "err", err)
			}
			return
		}
		ra, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		t.mu.Lock()
		p := t.byIP[ra.Addr().Unmap()]
		t.mu.Unlock()
		if p == nil || !p.pub.Less(t.pub) {
			t.log.Warn("tunnel: refused session from unexpected address", "addr", ra)
			c.Close()
			continue
		}
		p.acceptSession(c)
	}
}
