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
// Sessions are made on demand (README "Performance", fleet scale): every mesh member is a
// WireGuard peer (an inactive entry costs no traffic), but a yamux session
// — pings, path probes, goroutines, buffers — exists only while this node
// wants one (SetWarm: the peers its imports may pick next), a stream needs
// one (the first stream to a peer dials it: one WireGuard handshake and
// one TCP handshake), or the peer dialled one. Either side may dial; the
// node closes sessions it dialled once idle (CloseIdle).
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
	// IdlePingInterval is how often a session that has carried no stream
	// for busyWindow is pinged (default 1s): a warm standby costs a fifth
	// of a busy session, and is still known good within a second or two
	// when failover needs it. Its path probes slow down alike.
	IdlePingInterval time.Duration
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
	// Session is SessionStateUp, SessionStateIdle or SessionStateDown.
	Session string
	// Owned: this node holds a session it needed (which it closes when
	// idle; see CloseIdle).
	Owned bool
	// Redundant: both sides dialled a session and the one this node owns
	// is not the one new streams use: close it once it carries no stream.
	Redundant bool
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

	authLog sessionAuthLog // failed session handshakes

	// Lock order: mu (and a peer's mu) before PathBind.mu: the tunnel
	// calls the bind holding them, and the bind never calls back into the
	// tunnel holding its own lock (see PathBind).
	mu     sync.Mutex
	peers  map[key.PublicKey]*peer // guarded by mu
	byIP   map[netip.Addr]*peer    // guarded by mu
	closed bool                    // guarded by mu
	warm   map[key.PublicKey]bool  // guarded by mu; peers to keep a session with
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
	if cfg.IdlePingInterval == 0 {
		cfg.IdlePingInterval = max(time.Second, cfg.PingInterval)
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
	if f, ok := tdev.(interface{ filterError() error }); ok && f.filterError() != nil {
		t.log.Warn("tunnel: kernel mode without an input filter: peers can reach every host service on the mesh address; install nft", "err", f.filterError())
	}
	t.bind = NewPathBind(cfg.Listen, t.pub, cfg.ClusterKey, t.log)
	t.bind.SetPrivateKey(cfg.PrivateKey)
	t.bind.SetPeerNamer(cfg.PeerName)
	t.bind.noOffload = !kn.udpOffload
	t.bind.onCall = t.called
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
	t.wg.Add(3)
	go t.acceptLoop()
	go t.pokeStale()
	go t.trimLoop()
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

// SetPeers makes the device's peers exactly ps: new ones are added (as
// inactive WireGuard peers; a session is dialled only if SetWarm named
// them), changed endpoints are updated, missing ones are removed with
// their sessions.
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
	var removed, added []*peer
	var addedAt []netip.AddrPort
	for pub, p := range t.peers {
		if _, ok := want[pub]; !ok {
			p.cancel() // before its WireGuard entry goes: ensureWG adds none after
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
		// No WireGuard peer yet (ensureWG adds it when a session is
		// needed or the peer makes contact): a member without traffic
		// costs a few hundred bytes here, no goroutine.
		p = newPeer(t, pub)
		t.peers[pub] = p
		t.byIP[p.ip] = p
		added = append(added, p)
		addedAt = append(addedAt, w.Endpoint)
		if t.warm[pub] {
			p.want = true
		}
		p.endpoint = w.Endpoint
	}
	t.mu.Unlock()

	var err error
	var uapi strings.Builder
	t.ipcMu.Lock()
	for _, p := range removed {
		if p.wgOn {
			fmt.Fprintf(&uapi, "public_key=%s\nremove=true\n", p.pub.Hex())
			p.wgOn = false
		}
	}
	if uapi.Len() > 0 {
		if err = t.dev.IpcSet(uapi.String()); err != nil {
			err = fmt.Errorf("tunnel: configure peers: %w", err)
		}
	}
	t.ipcMu.Unlock()
	for _, p := range removed {
		p.stop()
	}
	for i, p := range added {
		if t.bind.TakeStranger(addedAt[i]) {
			// Its handshake reached us before we knew its key and was
			// dropped; WireGuard would retry only after 5 s. Answer with
			// a handshake of our own now.
			t.poke(p)
		}
		p.mu.Lock()
		p.ensureDialLocked()
		p.mu.Unlock()
	}
	return err
}

// ensureWG makes p a WireGuard peer of the device if it is not one yet
// (WireGuard peers exist only for peers with traffic: a session needed,
// being dialled, or contact from the peer). It reports whether p is one.
func (t *Tunnel) ensureWG(p *peer) bool {
	t.ipcMu.Lock()
	defer t.ipcMu.Unlock()
	return t.ensureWGLocked(p)
}

func (t *Tunnel) ensureWGLocked(p *peer) bool {
	if p.wgOn {
		return true
	}
	if p.ctx.Err() != nil {
		return false
	}
	err := t.dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\nallowed_ip=%s/128\n",
		p.pub.Hex(), p.pub.Hex(), p.ip))
	if err != nil {
		p.logger().Warn("tunnel: add WireGuard peer", "err", err)
		return false
	}
	p.wgOn = true
	p.wgSince = time.Now()
	t.bind.SetWG(p.pub, true)
	return true
}

// wgIdleAfter is how long a peer without a session keeps its WireGuard
// entry: longer than WireGuard's keypair lifetime (RejectAfterTime,
// 180 s), so that a peer never sends us data on a keypair we forgot.
const wgIdleAfter = 200 * time.Second

// trimLoop removes the WireGuard entries of peers that have had no session
// and no dial for wgIdleAfter.
func (t *Tunnel) trimLoop() {
	defer t.wg.Done()
	tick := time.NewTicker(wgIdleAfter / 8)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		t.trimIdle(time.Now())
	}
}

func (t *Tunnel) trimIdle(now time.Time) {
	t.mu.Lock()
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()
	for _, p := range peers {
		t.ipcMu.Lock()
		if p.wgOn {
			p.mu.Lock()
			idle := p.out == nil && p.in == nil && !p.dialing && !p.want && p.waiters == 0 &&
				now.Sub(p.quietSince) >= wgIdleAfter && now.Sub(p.wgSince) >= wgIdleAfter
			p.mu.Unlock()
			if idle && t.dev.IpcSet("public_key="+p.pub.Hex()+"\nremove=true\n") == nil {
				p.wgOn = false
				t.bind.SetWG(p.pub, false)
				p.logger().Debug("tunnel: idle WireGuard peer removed")
			}
		}
		t.ipcMu.Unlock()
	}
}

// poke makes WireGuard initiate a handshake with p now (turning a
// persistent keepalive on sends one at once; it is turned off again in
// the same configuration).
func (t *Tunnel) poke(p *peer) {
	t.ipcMu.Lock()
	if !t.ensureWGLocked(p) {
		t.ipcMu.Unlock()
		return
	}
	err := t.dev.IpcSet("public_key=" + p.pub.Hex() + "\nupdate_only=true\npersistent_keepalive_interval=25\n" +
		"public_key=" + p.pub.Hex() + "\nupdate_only=true\npersistent_keepalive_interval=0\n")
	t.ipcMu.Unlock()
	if err != nil && p.ctx.Err() == nil {
		p.logger().Debug("tunnel: poke peer", "err", err)
	}
}

// SetWarm makes pubs the peers this node keeps a session with (dialled now
// and redialled when it breaks); peers no longer warm keep their session
// until CloseIdle closes it. Unknown keys are remembered for when SetPeers
// adds them.
func (t *Tunnel) SetWarm(pubs []key.PublicKey) {
	want := make(map[key.PublicKey]bool, len(pubs))
	for _, pub := range pubs {
		want[pub] = true
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	var changed []*peer
	for pub := range t.warm {
		if !want[pub] {
			if p := t.peers[pub]; p != nil {
				changed = append(changed, p)
			}
		}
	}
	for pub := range want {
		if !t.warm[pub] {
			if p := t.peers[pub]; p != nil {
				changed = append(changed, p)
			}
		}
	}
	t.warm = want
	t.mu.Unlock()
	for _, p := range changed {
		p.setWant(want[p.pub])
	}
}

// pokeStale answers peers that still use a keypair of this node's previous
// run with a fresh handshake (see PathBind.Stale).
func (t *Tunnel) pokeStale() {
	defer t.wg.Done()
	for {
		select {
		case <-t.ctx.Done():
			return
		case pub := <-t.bind.Stale():
			t.mu.Lock()
			p := t.peers[pub]
			t.mu.Unlock()
			if p != nil {
				p.logger().Debug("tunnel: peer makes contact: handshaking")
				t.poke(p)
			}
		}
	}
}

// called handles a peer's authenticated request to dial it.
func (t *Tunnel) called(pub key.PublicKey) {
	t.mu.Lock()
	p := t.peers[pub]
	t.mu.Unlock()
	if p != nil {
		p.calledBy()
	}
}

// SessionInfo is one peer this node holds a session with.
type SessionInfo struct {
	PublicKey key.PublicKey
	Streams   int
	Owned     bool // this node needed it (and closes it when idle: CloseIdle)
	// Redundant: two sessions are up and the one this node owns is not the
	// one new streams use; SpareStreams is what it still carries.
	Redundant    bool
	SpareStreams int
}

// Sessions lists the peers this node holds a session with: the only peers
// that cost more than gossip.
func (t *Tunnel) Sessions() []SessionInfo {
	t.mu.Lock()
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()
	var out []SessionInfo
	for _, p := range peers {
		p.mu.Lock()
		if p.out != nil || p.in != nil {
			out = append(out, p.infoLocked())
		}
		p.mu.Unlock()
	}
	return out
}

// SessionCounts returns how many peers are in each session state
// (SessionState*).
func (t *Tunnel) SessionCounts() map[string]int {
	t.mu.Lock()
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()
	out := map[string]int{SessionStateUp: 0, SessionStateIdle: 0, SessionStateDown: 0}
	for _, p := range peers {
		p.mu.Lock()
		out[p.stateLocked()]++
		p.mu.Unlock()
	}
	return out
}

// CloseIdle closes the sessions this node owns with pub (see SessionInfo)
// that carry no stream, if no stream is being opened, and reports whether
// it closed any. A stream that needs the peer afterwards opens a new
// session. Sessions the peer owns are the peer's to close.
func (t *Tunnel) CloseIdle(pub key.PublicKey) bool {
	t.mu.Lock()
	p := t.peers[pub]
	t.mu.Unlock()
	if p == nil {
		return false
	}
	return p.closeIdle()
}

// SetBlackhole drops all tunnel traffic to and from the given peers (none:
// restore), as if their links were cut. Sessions are not told: they see
// silence, exactly as with a real outage.
func (t *Tunnel) SetBlackhole(peers []key.PublicKey) {
	holes := make(map[key.PublicKey]bool, len(peers))
	for _, p := range peers {
		holes[p] = true
	}
	t.bind.SetBlocked(holes) // the one black-hole set: the bind drops on every path
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
		var c net.Conn
		var err error
		for try := 0; ; try++ {
			var sess *yamux.Session
			c, sess, err = p.openStream(ctx)
			if err == nil && handshake != nil {
				err = runHandshake(ctx, c, handshake)
			}
			// A session closed as idle by the peer just as this stream
			// went out on it: the stream says nothing of the peer, so
			// once more on a new session.
			if err != nil && c != nil && try == 0 && ctx.Err() == nil && sess.IsClosed() {
				c.Close()
				c = nil
				continue
			}
			break
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

// acceptLoop accepts session connections from peers and hands each to its
// peer.
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
		if p == nil {
			t.log.Warn("tunnel: refused session from unexpected address", "addr", ra)
			c.Close()
			continue
		}
		p.acceptSession(c)
	}
}

// ResetSession closes every session with pub, and so every stream on them,
// at once; the peer is redialled as usual. It is for a peer that abuses its
// session (limits); it reports whether there was a session.
func (t *Tunnel) ResetSession(pub key.PublicKey) bool {
	t.mu.Lock()
	p := t.peers[pub]
	t.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	in, out := p.in, p.out
	p.mu.Unlock()
	for _, s := range []*yamux.Session{in, out} {
		if s != nil {
			s.Close() // the serve loop sees it end and cleans up
		}
	}
	return in != nil || out != nil
}
