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
// node closes sessions it dialled once idle (CloseIdle). Before a session
// carries anything, its two ends prove their WireGuard keys to each other
// (sessionauth.go); the dialler's proof leaves with its first stream, so
// it costs no round trip of its own.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.zx2c4.com/wireguard/device"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/pace"
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
	// streamCloseTimeout (tests) replaces yamux's stream close timeout.
	streamCloseTimeout time.Duration

	// Pacer, if set, paces the idle sessions' pings and the probes of
	// idle paths: they fire at the node's beat (package pace). Busy
	// sessions keep plain timers.
	Pacer *pace.Pacer
}

// Peer is what SetPeers needs to know of a mesh node.
type Peer struct {
	PublicKey key.PublicKey
	Endpoint  netip.AddrPort // WireGuard UDP endpoint; zero if unknown
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
	// helloSkew: tests add it to the clock of MSA2 stamps (helloClock).
	helloSkew atomic.Int64
	// authCount counts session handshakes by kind (tests).
	authCount struct {
		dial1, dial2, accept1, accept2, refused, fallbacks atomic.Int64
	}

	// Lock order: mu (and a peer's mu) before PathBind.mu: the tunnel
	// calls the bind holding them, and the bind never calls back into the
	// tunnel holding its own lock (see PathBind).
	mu     sync.Mutex
	peers  map[key.PublicKey]*peer // guarded by mu
	byIP   map[netip.Addr]*peer    // guarded by mu
	closed bool                    // guarded by mu
	warm   map[key.PublicKey]bool  // guarded by mu; peers to keep a session with
	ipcMu  sync.Mutex              // serialises IpcSet calls

	secretKick chan struct{} // wakes secretLoop (secrets.go)
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

		secretKick: make(chan struct{}, 1),
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
	t.bind.pacer = cfg.Pacer
	t.bind.SetPrivateKey(cfg.PrivateKey)
	t.bind.SetPeerNamer(cfg.PeerName)
	t.bind.noOffload = !kn.udpOffload
	t.bind.onCall = t.called
	wlog := t.log.With("component", "wireguard")
	t.dev = device.NewDevice(tdev, t.bind, &device.Logger{
		Verbosef: func(f string, a ...any) { wlog.Debug(fmt.Sprintf(f, a...)) },
		Errorf:   func(f string, a ...any) { wlog.Debug(fmt.Sprintf(f, a...)) },
	})
	t.dev.SetStaticStatic(t.staticStatic)
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
	t.wg.Add(4)
	go t.acceptLoop()
	go t.pokeStale()
	go t.trimLoop()
	go t.secretLoop()
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
