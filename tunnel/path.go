package tunnel

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshd/meshd/internal/key"
)

// Relay is a second packet path to peers: a relay server that forwards
// WireGuard packets by destination public key (*relay.Client satisfies
// it). Send must not block.
type Relay interface {
	Send(to key.PublicKey, pkt []byte) error
}

// Path probing. Each peer's direct UDP path is confirmed by small
// authenticated probes on the WireGuard socket (first byte probeMagic,
// which WireGuard never uses: its message types are 1-4). A path is used
// while most recent probes are answered; one that is up but loses most
// packets (a gray failure) is abandoned for the relay like a dead one, and
// taken back once probes pass again.
//
// Probe packet (version 3, 82 bytes):
//
//	magic 0xF0 | kind u8 | sender key [32] | seq u64 | stamp u64 | mac [16] | pairmac [16]
//
// mac is HMAC-SHA256, keyed from the cluster key, over the first 50 bytes
// and the recipient's public key, so a probe captured on its way to one node
// is worthless at another. pairmac is the same MAC keyed from the X25519
// shared secret of the sender's and the recipient's node keys: only the
// named sender can make it, so a holder of the cluster key cannot speak for
// another node (move its learned address, or spend its stamps). A probe
// from a key with no tunnel state is checked by mac alone, and only noted. stamp makes probes fresh: a sender numbers every
// probe it sends from a counter that starts at its clock (ns) when the bind
// is created, so it grows across restarts; a receiver takes a ping (or any
// kind but pong) from a known peer only if its stamp is newer than the last
// one it took from that peer. A pong echoes its ping's seq and stamp and is
// taken only for the ping in flight with both, once. A replayed probe is
// therefore never answered and never changes the peer's learned address.
// (As with WireGuard's handshake, a receiver that restarted forgets the
// stamps it saw: it may take one replayed ping per peer until the peer's
// next real one, which restores the address.)
const (
	probeMagic    = 0xF0
	probePing     = 1
	probePong     = 2
	probeCall     = 3 // "dial me": see PathBind.Call
	probeHdrLen   = 1 + 1 + key.Len + 8 + 8
	probeLen      = probeHdrLen + 16 + 16
	probeEvery    = 200 * time.Millisecond
	probeWindow   = 8               // probes judged
	probeRing     = probeWindow + 1 // the judged ones plus the one in flight
	probeKeepUp   = 5               // answered of probeWindow to keep using direct
	probeDeadRun  = 3               // newest probes in a row unanswered: direct is dead
	probeComeBack = 8               // answered of probeWindow to go back to direct
	// probeFirstVerdict answered probes move a new peer from the relay to
	// its direct path.
	probeFirstVerdict = 3
	relayQueueLen     = 1024
	// probeMaxEvery bounds the backoff of probes to a direct path that
	// stopped answering: each further unanswered probe doubles the
	// interval up to this; an answer restores probeEvery.
	probeMaxEvery = 3200 * time.Millisecond
	// probeIdleEvery is the probe interval of a peer whose session carries
	// no stream (see SetBusy).
	probeIdleEvery = time.Second
)

// Strangers: a WireGuard handshake initiation from an address no peer is
// known at is dropped by WireGuard, which retries only after 5 s. The bind
// remembers such addresses for a while, so that when a peer at one is
// added the tunnel can answer with a handshake at once (TakeStranger).
const (
	strangerTTL      = 10 * time.Second
	maxStrangers     = 64
	wgInitiationType = 1
	wgInitiationLen  = 148
	wgResponseType   = 2
	wgTransportType  = 4
	// A peer that sends transport data although no handshake with it was
	// seen since this node started (it restarted: the peer's keypair is
	// for its previous run, and WireGuard would only notice after 15 s of
	// silence) is answered with a handshake, at most once per stalePokeEvery.
	stalePokeEvery = 2 * time.Second
	staleQueueLen  = 16
)

// PathBind is the tunnel's conn.Bind. Its endpoints are peers, keyed by
// public key, not addresses: each send picks the peer's current path,
// direct UDP while probes confirm it, else the relay. WireGuard never sees
// a path change, so the TCP session inside the tunnel and every yamux
// stream on it survive a switch.
type PathBind struct {
	// immutable
	addr     netip.AddrPort
	self     key.PublicKey
	probeKey []byte // nil: no probing, direct is always used; else the first of probeKeys at start
	log      *slog.Logger

	// probeKeys are the probe MAC keys of every cluster key (rotation): the
	// first signs, any verifies. Replaced whole by SetClusterKeys.
	probeKeys atomic.Pointer[[][]byte]

	relayIn chan relayPacket // bounded; relayed packets for the receive func

	namer atomic.Pointer[func(key.PublicKey) string] // names peers in logs; see SetPeerNamer

	// The send and receive paths take no bind-wide lock: they read the
	// socket (live), the relay, the black-hole set, the peer (fast, and
	// byAddr on receive) and its path choice atomically; only a handshake
	// from an unknown address takes mu (to note the stranger). Everything
	// else is guarded by mu.
	// Lock order: Tunnel.mu before PathBind.mu (the tunnel calls the bind
	// holding its lock); the bind never calls the tunnel, or sends on
	// stale, holding mu.
	live  atomic.Pointer[udpConn]                // the open socket's batched I/O; nil when closed
	relay atomic.Pointer[relayRef]               // nil when none
	holes atomic.Pointer[map[key.PublicKey]bool] // black-holed peers: the one set (Tunnel.SetBlackhole); immutable once stored
	fast  sync.Map                               // key.PublicKey → *peerPath: paths, for lock-free lookups

	mu   sync.Mutex
	conn *net.UDPConn // guarded by mu; nil when closed

	noOffload bool                         // set before Open: no UDP GSO/GRO (a tuning knob)
	done      chan struct{}                // guarded by mu; closed by Close
	wg        sync.WaitGroup               // probe loop
	paths     map[key.PublicKey]*peerPath  // guarded by mu
	byAddr    sync.Map                     // netip.AddrPort → key.PublicKey; written under mu, read without it
	stamp     atomic.Uint64                // last probe stamp sent (see probe format)
	priv      *key.PrivateKey              // guarded by mu; for probes' pair MACs (SetPrivateKey)
	strangers map[netip.AddrPort]time.Time // guarded by mu; unknown handshake sources, bounded
	active    map[key.PublicKey]*peerPath  // guarded by mu; the peers probed (see SetActive)
	onCall    func(key.PublicKey)          // set before Open; a peer asks us to dial it
	stale     chan key.PublicKey           // bounded; peers to answer with a handshake (see stalePokeEvery)
}

// relayRef is the relay path and its name.
type relayRef struct {
	r    Relay
	name string
}

// pathChoice is a peer's current path, immutable once published: the send
// path reads it without the bind's lock.
type pathChoice struct {
	direct   netip.AddrPort
	useRelay bool
}

// peerPath is what the bind knows of one peer's paths. Guarded by
// PathBind.mu, except the atomic fields.
type peerPath struct {
	// choice is direct and useRelay as published by publish (under
	// PathBind.mu) for the send path.
	choice     atomic.Pointer[pathChoice]
	direct     netip.AddrPort
	seq        uint64
	pairKey    []byte            // probe pairmac key (X25519 of the node keys); nil until first used
	sent       [probeRing]uint64 // seq of recent probes, ring
	stamps     [probeRing]uint64 // their stamps, which a pong must echo
	acked      [probeRing]bool
	lastStamp  uint64         // newest stamp taken from this peer's pings (freshness)
	useRelay   bool           // send via the relay (when there is one)
	everDirect bool           // the direct path was confirmed at least once
	learned    netip.AddrPort // source address seen in its probes, if not direct
	changed    time.Time
	// Probe scheduling: only active peers (a session held or being
	// dialled) are probed, every `every` (probeEvery, backed off while the
	// direct path does not answer), next at `next`. Probes sent before the
	// peer became active again (seq <= base) are not judged.
	active bool
	idle   bool // the session carries nothing: probed every probeIdleEvery
	base   uint64
	every  time.Duration
	next   time.Time

	// WireGuard bytes sent to and received from the peer on any path
	// (not probes, not black-holed packets): atomic, so that metrics and
	// status read them without the device's UAPI lock.
	tx, rx atomic.Uint64

	handshook atomic.Bool  // a WireGuard handshake message was sent or received
	wg        atomic.Bool  // the peer is a WireGuard peer of the device (see SetWG)
	pokedAt   atomic.Int64 // unix nanoseconds of the last stale-keypair poke
}

type relayPacket struct {
	from key.PublicKey
	pkt  []byte
}

var _ conn.Bind = (*PathBind)(nil)

// NewPathBind returns a bind on addr. clusterKey authenticates probes;
// with none, probing is off and peers are always sent to directly.
func NewPathBind(addr netip.AddrPort, self key.PublicKey, clusterKey []byte, lg *slog.Logger) *PathBind {
	b := &PathBind{
		addr: addr, self: self, log: lg,
		relayIn:   make(chan relayPacket, relayQueueLen),
		paths:     make(map[key.PublicKey]*peerPath),
		strangers: make(map[netip.AddrPort]time.Time),
		active:    make(map[key.PublicKey]*peerPath),
		stale:     make(chan key.PublicKey, staleQueueLen),
	}
	if len(clusterKey) > 0 {
		b.probeKey = probeKeyOf(clusterKey)
		b.probeKeys.Store(&[][]byte{b.probeKey})
	}
	b.stamp.Store(uint64(time.Now().UnixNano()))
	return b
}

func probeKeyOf(clusterKey []byte) []byte {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("meshd path probe v2"))
	return m.Sum(nil)
}

// SetClusterKeys replaces the cluster keys probes are authenticated with:
// the first signs, every one verifies (cluster key rotation). It does
// nothing on a bind made without a cluster key (probing off).
func (b *PathBind) SetClusterKeys(keys [][]byte) {
	if b.probeKey == nil || len(keys) == 0 {
		return
	}
	pk := make([][]byte, 0, len(keys))
	for _, k := range keys {
		pk = append(pk, probeKeyOf(k))
	}
	b.probeKeys.Store(&pk)
}

// LocalAddr returns the bound address, or the configured one when closed.
func (b *PathBind) LocalAddr() netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return b.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return b.addr
}

// SetPeer records peer's direct address (zero: none known).
func (b *PathBind) SetPeer(pub key.PublicKey, direct netip.AddrPort) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.paths[pub]
	if p == nil {
		// Start on the relay (if any) until probes confirm the direct path.
		p = newPeerPath(time.Now(), b.probeKey != nil)
		b.paths[pub] = p
		b.fast.Store(pub, p)
	}
	if p.direct != direct {
		b.byAddr.Delete(p.direct)
		p.direct = direct
		if direct.IsValid() {
			b.byAddr.Store(direct, pub)
		}
		p.publish()
	}
}

// SetActive starts (active) or stops probing peer's direct path. Only peers
// with a session, or one being dialled, are probed: every other member
// costs nothing here. A peer that becomes active again keeps its last
// verdict and is judged afresh from its next probes.
func (b *PathBind) SetActive(pub key.PublicKey, active bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.paths[pub]
	if p == nil || p.active == active {
		return
	}
	p.active = active
	if active {
		p.base, p.every, p.next, p.idle = p.seq, probeEvery, time.Time{}, false
		b.active[pub] = p
	} else {
		delete(b.active, pub)
	}
}

// SetBusy sets how often peer's direct path is probed: every probeEvery
// while its session carries streams (busy), every probeIdleEvery when not.
// Turning busy probes at the next tick.
func (b *PathBind) SetBusy(pub key.PublicKey, busy bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.paths[pub]
	if p == nil || p.idle == !busy {
		return
	}
	p.idle = !busy
	if busy {
		p.every, p.next = probeEvery, time.Time{}
	}
}

// TakeStranger reports whether a WireGuard handshake initiation came from
// addr, from no known peer, within strangerTTL, and forgets it.
func (b *PathBind) TakeStranger(addr netip.AddrPort) bool {
	if !addr.IsValid() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	at, ok := b.strangers[addr]
	delete(b.strangers, addr)
	return ok && time.Since(at) < strangerTTL
}

// noteStrangerLocked remembers a handshake initiation from an unknown
// address; the set is bounded (full: expired entries go, else the new one
// is not kept).
func (b *PathBind) noteStrangerLocked(addr netip.AddrPort, now time.Time) {
	if _, ok := b.strangers[addr]; !ok && len(b.strangers) >= maxStrangers {
		for a, at := range b.strangers {
			if now.Sub(at) >= strangerTTL {
				delete(b.strangers, a)
			}
		}
		if len(b.strangers) >= maxStrangers {
			return
		}
	}
	b.strangers[addr] = now
}

// RemovePeer forgets peer.
func (b *PathBind) RemovePeer(pub key.PublicKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.paths[pub]; p != nil {
		b.byAddr.Delete(p.direct)
		if at, _ := b.addrPeer(p.learned); p.learned.IsValid() && at == pub {
			b.byAddr.Delete(p.learned)
		}
		delete(b.paths, pub)
		b.fast.Delete(pub)
		delete(b.active, pub)
	}
}

// SetRelay makes r (named name) the relay path; nil removes it.
func (b *PathBind) SetRelay(r Relay, name string) {
	if r == nil {
		b.relay.Store(nil)
		return
	}
	b.relay.Store(&relayRef{r: r, name: name})
}

// relayName is the relay's name, "" when there is none.
func (b *PathBind) relayName() string {
	if rr := b.relay.Load(); rr != nil {
		return rr.name
	}
	return ""
}

// blocked reports whether pub is black-holed.
func (b *PathBind) blocked(pub key.PublicKey) bool {
	h := b.holes.Load()
	return h != nil && (*h)[pub]
}

// addrPeer returns the peer packets from a come from, without the bind's
// lock.
func (b *PathBind) addrPeer(a netip.AddrPort) (key.PublicKey, bool) {
	if v, ok := b.byAddr.Load(a); ok {
		return v.(key.PublicKey), true
	}
	return key.PublicKey{}, false
}

// peer returns pub's path record, nil if unknown, without the bind's lock.
func (b *PathBind) peer(pub key.PublicKey) *peerPath {
	if v, ok := b.fast.Load(pub); ok {
		return v.(*peerPath)
	}
	return nil
}

// DeliverRelay hands the bind a packet the relay brought from peer from.
// It never blocks: when the receive queue is full the packet is dropped.
func (b *PathBind) DeliverRelay(from key.PublicKey, pkt []byte) {
	cp := make([]byte, len(pkt))
	copy(cp, pkt)
	select {
	case b.relayIn <- relayPacket{from: from, pkt: cp}:
	default:
	}
}

// Bytes returns the WireGuard bytes sent to and received from peer on
// any path since it was added; zero for an unknown peer.
func (b *PathBind) Bytes(pub key.PublicKey) (tx, rx uint64) {
	p := b.peer(pub)
	if p == nil {
		return 0, 0
	}
	return p.tx.Load(), p.rx.Load()
}

// SetBlocked drops all packets to and from the given peers (a drill's
// black hole), on every path; nil restores.
// The bind keeps peers as given: the caller must not change the map after.
func (b *PathBind) SetBlocked(peers map[key.PublicKey]bool) {
	if len(peers) == 0 {
		b.holes.Store(nil)
		return
	}
	b.holes.Store(&peers)
}

// Path reports the path packets to peer take now: "direct", "relay" or
// "none", and the relay's name when relayed.
func (b *PathBind) Path(pub key.PublicKey) (path, via string) {
	p := b.peer(pub)
	if p == nil {
		return "none", ""
	}
	c, rr := p.choice.Load(), b.relay.Load()
	switch {
	case c.useRelay && rr != nil:
		return "relay", rr.name
	case c.direct.IsValid():
		return "direct", ""
	}
	return "none", ""
}

// Open binds the UDP socket and starts probing.
func (b *PathBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	addr := b.addr
	if addr.Port() == 0 {
		addr = netip.AddrPortFrom(addr.Addr(), port)
	}
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, 0, fmt.Errorf("tunnel: listen udp %s: %w", addr, err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	b.conn = c
	done := make(chan struct{})
	b.done = done
	if b.probeKey != nil {
		b.wg.Add(1)
		go b.probeLoop(c, done)
	}
	u := newUDPConn(c, !b.noOffload)
	b.live.Store(u)
	// One goroutine calls recvUDP: the scratch buffer holds a received
	// (possibly GRO-coalesced) run of datagrams until all are handed out.
	var (
		scratch  = make([]byte, 1<<16)
		oob      = make([]byte, oobSize)
		pending  []byte // rest of the run, not yet handed out
		seg      int
		from     netip.AddrPort
		fromPeer key.PublicKey
		fromPath *peerPath // fromPeer's byte counters; nil if unknown
		lastEp   *Endpoint // immutable once handed out: reused while the sender stays the same
	)
	recvUDP := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			if len(pending) == 0 {
				n, s, src, err := u.read(scratch, oob)
				if err != nil {
					return 0, err
				}
				if n == 0 {
					continue
				}
				pending, seg = scratch[:n], s
				from = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
				pub, known := b.addrPeer(from)
				blocked := known && b.blocked(pub)
				var pp *peerPath
				if known {
					pp = b.peer(pub)
				} else if n == wgInitiationLen && scratch[0] == wgInitiationType {
					b.mu.Lock()
					b.noteStrangerLocked(from, time.Now())
					b.mu.Unlock()
				}
				if blocked {
					pending = nil
					continue
				}
				if pp != nil && b.noteHandshake(pp, pub, scratch[0]) {
					pending = nil
					continue
				}
				fromPeer, fromPath = pub, pp
			}
			var ep *Endpoint
			count := 0
			for count < len(packets) && len(pending) > 0 {
				pkt := pending[:min(seg, len(pending))]
				pending = pending[len(pkt):]
				if pkt[0] == probeMagic {
					b.handleProbe(pkt, from)
					continue
				}
				if len(pkt) > len(packets[count]) {
					continue
				}
				if ep == nil {
					if lastEp == nil || lastEp.Peer != fromPeer || lastEp.Addr != from {
						lastEp = &Endpoint{Peer: fromPeer, Addr: from}
					}
					ep = lastEp
				}
				sizes[count] = copy(packets[count], pkt)
				eps[count] = ep
				count++
			}
			if count > 0 {
				if fromPath != nil {
					var n int
					for _, sz := range sizes[:count] {
						n += sz
					}
					fromPath.rx.Add(uint64(n))
				}
				return count, nil
			}
		}
	}
	recvRelay := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			select {
			case rp := <-b.relayIn:
				blocked := b.blocked(rp.from)
				pp := b.peer(rp.from)
				if blocked || len(rp.pkt) > len(packets[0]) || len(rp.pkt) == 0 {
					continue
				}
				if pp != nil && b.noteHandshake(pp, rp.from, rp.pkt[0]) {
					continue
				}
				if pp != nil {
					pp.rx.Add(uint64(len(rp.pkt)))
				}
				sizes[0] = copy(packets[0], rp.pkt)
				eps[0] = &Endpoint{Peer: rp.from}
				return 1, nil
			case <-done:
				return 0, net.ErrClosed
			}
		}
	}
	return []conn.ReceiveFunc{recvUDP, recvRelay}, uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}

// Close closes the socket and stops probing.
func (b *PathBind) Close() error {
	b.mu.Lock()
	c, done := b.conn, b.done
	b.conn, b.done = nil, nil
	b.live.Store(nil)
	b.mu.Unlock()
	if c == nil {
		return nil
	}
	close(done)
	err := c.Close()
	b.wg.Wait()
	return err
}

// SetMark is a no-op.
func (b *PathBind) SetMark(uint32) error { return nil }

// BatchSize is how many packets wireguard-go hands Send, or takes from a
// receive function, at once.
func (b *PathBind) BatchSize() int { return conn.IdealBatchSize }

// ParseEndpoint accepts a peer's hex public key (meshd's form) or ip:port.
func (b *PathBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if len(s) == 2*key.Len {
		if raw, err := hex.DecodeString(s); err == nil {
			var pub key.PublicKey
			copy(pub[:], raw)
			return &Endpoint{Peer: pub}, nil
		}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("tunnel: endpoint %q: %w", s, err)
	}
	return &Endpoint{Addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// Send sends to the endpoint's peer on its current path.
func (b *PathBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	u := b.live.Load()
	dst := e.Addr
	var r Relay
	var pp *peerPath
	if !e.Peer.IsZero() {
		if b.blocked(e.Peer) {
			return nil // dropped, as by a cut link
		}
		if p := b.peer(e.Peer); p != nil {
			pp = p
			c := p.choice.Load()
			if rr := b.relay.Load(); c.useRelay && rr != nil {
				r = rr.r
			} else if c.direct.IsValid() {
				dst = c.direct
			}
		}
	}
	if u == nil {
		return net.ErrClosed
	}
	if pp != nil {
		var n int
		for _, buf := range bufs {
			n += len(buf)
		}
		pp.tx.Add(uint64(n))
		if len(bufs) > 0 && len(bufs[0]) > 0 && (bufs[0][0] == wgInitiationType || bufs[0][0] == wgResponseType) {
			pp.handshook.Store(true)
		}
	}
	if r != nil {
		for _, buf := range bufs {
			r.Send(e.Peer, buf) // drops when the relay queue is full, like a lossy link
		}
		return nil
	}
	if !dst.IsValid() {
		return nil // no path yet; WireGuard retries
	}
	return u.writeBatch(bufs, dst)
}

// probeLoop pings every peer's direct address and re-judges its path.
func (b *PathBind) probeLoop(c *net.UDPConn, done chan struct{}) {
	defer b.wg.Done()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	type out struct {
		to         netip.AddrPort
		pub        key.PublicKey
		seq, stamp uint64
	}
	var sends []out
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		sends = sends[:0]
		now := time.Now()
		b.mu.Lock()
		for pub, p := range b.active {
			if now.Before(p.next) {
				continue
			}
			b.judgeLocked(pub, p, now)
			if !p.direct.IsValid() || b.blocked(pub) {
				continue
			}
			p.next = now.Add(p.every - probeEvery/4) // due at the tick nearest every
			st := b.stamp.Add(1)
			sends = append(sends, out{p.direct, pub, p.startProbe(st), st})
		}
		b.mu.Unlock()
		for _, s := range sends {
			c.WriteToUDPAddrPort(b.probe(probePing, s.pub, s.seq, s.stamp), s.to)
		}
	}
}

// judgeLocked moves a peer between relay and direct by its probe record
// (see peerPath.judge) and logs the move.
func (b *PathBind) judgeLocked(pub key.PublicKey, p *peerPath, now time.Time) {
	moved, answered := p.judge(now)
	relayBy := b.relayName()
	switch {
	case !moved:
	case !p.useRelay:
		b.log.Info("path: direct path confirmed", "peer", b.peerName(pub))
	case relayBy == "":
		b.log.Warn("path: direct path lost or lossy; no relay to fall back to", "peer", b.peerName(pub),
			"answered", fmt.Sprintf("%d/%d", answered, probeWindow))
	default:
		b.log.Warn("path: direct path lost or lossy; using the relay", "peer", b.peerName(pub),
			"answered", fmt.Sprintf("%d/%d", answered, probeWindow), "relay", relayBy)
	}
}

// newPeerPath is a peer's record as of now: on the relay until probes
// confirm the direct path when probing (probing), else direct.
func newPeerPath(now time.Time, probing bool) *peerPath {
	p := &peerPath{changed: now, useRelay: probing}
	p.publish()
	return p
}

// publish makes the peer's direct address and relay verdict the send
// path's choice; call it after changing either.
func (p *peerPath) publish() {
	p.choice.Store(&pathChoice{direct: p.direct, useRelay: p.useRelay})
}

// startProbe numbers the peer's next probe, stamped stamp, and records it
// in flight; it returns its seq.
func (p *peerPath) startProbe(stamp uint64) uint64 {
	p.seq++
	i := p.seq % probeRing
	p.sent[i], p.stamps[i], p.acked[i] = p.seq, stamp, false
	return p.seq
}

// ack records the answer to probe seq (checked fresh by freshLocked).
func (p *peerPath) ack(seq uint64) { p.acked[seq%probeRing] = true }

// judge moves the peer between relay and direct by its probe record and
// reschedules its probes; it reports whether the path moved and how many
// judged probes were answered. A new peer starts on the relay (when there
// is one) and moves to direct once its first probeFirstVerdict probes are
// all answered, so the first handshake never waits on a path that may not
// exist. Later, of the last probeWindow probes (the newest, still in
// flight, is not judged), fewer than probeKeepUp answered sends it back to
// the relay, and all of them answered brings it back to direct.
func (p *peerPath) judge(now time.Time) (moved bool, answered uint64) {
	sent := p.seq - p.base
	judged := min(sent-min(sent, 1), probeWindow)
	defer p.schedule(judged)
	for k := uint64(1); k <= judged; k++ {
		s := p.seq - k
		if i := s % probeRing; p.sent[i] == s && p.acked[i] {
			answered++
		}
	}
	if p.useRelay {
		need := uint64(probeComeBack)
		if !p.everDirect {
			need = probeFirstVerdict
		}
		if judged >= need && answered == judged {
			p.useRelay, p.everDirect, p.changed = false, true, now
			p.publish()
			return true, answered
		}
		return false, answered
	}
	// The newest judged probes all unanswered: the path is dead, switch
	// now rather than wait for the window's verdict.
	deadRun := judged >= probeDeadRun
	for k := uint64(1); deadRun && k <= probeDeadRun; k++ {
		s := p.seq - k
		if i := s % probeRing; p.sent[i] == s && p.acked[i] {
			deadRun = false
		}
	}
	if deadRun || (judged >= probeWindow && answered < probeKeepUp) {
		p.useRelay, p.changed = true, now
		p.publish()
		return true, answered
	}
	return false, answered
}

// schedule sets the peer's probe interval: probeEvery while its
// newest judged probe was answered (or nothing is judged yet), doubled up
// to probeMaxEvery for each judgement that finds the newest two unanswered
// while the direct path is out of use, so a dead endpoint is probed at a
// bounded rate.
func (p *peerPath) schedule(judged uint64) {
	base := probeEvery
	if p.idle {
		base = probeIdleEvery
	}
	p.every = max(p.every, base)
	if judged == 0 {
		return
	}
	for _, s := range []uint64{p.seq, p.seq - 1} { // the one in flight may have been answered too
		if i := s % probeRing; s > p.base && p.sent[i] == s && p.acked[i] {
			p.every = base
			return
		}
	}
	if p.useRelay && judged >= probeDeadRun {
		p.every = min(p.every*2, max(probeMaxEvery, base))
	}
}

// probe builds a probe packet for peer to (see the probe format): magic,
// kind, our key, seq, stamp, truncated MAC. stamp 0 takes the next one.
func (b *PathBind) probe(kind byte, to key.PublicKey, seq, stamp uint64) []byte {
	if stamp == 0 {
		stamp = b.stamp.Add(1)
	}
	pkt := make([]byte, 0, probeLen+key.Len)
	pkt = append(pkt, probeMagic, kind)
	pkt = append(pkt, b.self[:]...)
	pkt = binary.BigEndian.AppendUint64(pkt, seq)
	pkt = binary.BigEndian.AppendUint64(pkt, stamp)
	pkt = append(pkt, probeMAC((*b.probeKeys.Load())[0], pkt, to)...)
	b.mu.Lock()
	pk := b.pairKeyLocked(to, b.paths[to])
	b.mu.Unlock()
	return append(pkt, probeMAC(pk, pkt, to)...)
}

// SetPrivateKey gives the bind this node's private key, for probes' pair
// MACs; call it before Open. Without it pairmac is keyed by zeros (tests).
func (b *PathBind) SetPrivateKey(k key.PrivateKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.priv = &k
}

// pairKeyLocked returns the pairmac key shared with peer pub, cached in p
// (may be nil: then computed and not kept).
func (b *PathBind) pairKeyLocked(pub key.PublicKey, p *peerPath) []byte {
	if p != nil && p.pairKey != nil {
		return p.pairKey
	}
	secret := make([]byte, 32)
	if b.priv != nil {
		if s, err := curve25519.X25519(b.priv[:], pub[:]); err == nil {
			secret = s
		}
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("meshd path probe pair v3"))
	k := m.Sum(nil)
	if p != nil {
		p.pairKey = k
	}
	return k
}

// probeMAC is the 16-byte MAC of a probe header addressed to to.
func probeMAC(k, hdr []byte, to key.PublicKey) []byte {
	m := hmac.New(sha256.New, k)
	m.Write(hdr[:probeHdrLen])
	m.Write(to[:])
	return m.Sum(nil)[:16]
}

// handleProbe answers fresh pings and records pongs to pings in flight;
// unauthentic, stale and replayed probes are dropped silently and change
// nothing.
func (b *PathBind) handleProbe(pkt []byte, from netip.AddrPort) {
	if b.probeKey == nil || len(pkt) != probeLen {
		return
	}
	authentic := false
	for _, k := range *b.probeKeys.Load() {
		authentic = authentic || hmac.Equal(probeMAC(k, pkt, b.self), pkt[probeHdrLen:probeHdrLen+16])
	}
	if !authentic {
		return
	}
	var pub key.PublicKey
	copy(pub[:], pkt[2:2+key.Len])
	seq := binary.BigEndian.Uint64(pkt[2+key.Len:])
	stamp := binary.BigEndian.Uint64(pkt[2+key.Len+8:])
	b.mu.Lock()
	c := b.conn
	blocked := b.blocked(pub)
	p := b.paths[pub]
	if p != nil && (!hmac.Equal(probeMAC(b.pairKeyLocked(pub, p), pkt, b.self), pkt[probeHdrLen+16:]) ||
		!b.freshLocked(p, pkt[1], seq, stamp)) {
		b.mu.Unlock()
		return
	}
	if p != nil {
		// A fresh authenticated probe names its sender: learn where its
		// packets come from (behind NAT that may not be its advertised
		// address). One learned address per peer: a peer whose port keeps
		// changing cannot grow the map.
		if from != p.direct && from != p.learned {
			if at, _ := b.addrPeer(p.learned); p.learned.IsValid() && at == pub {
				b.byAddr.Delete(p.learned)
			}
			p.learned = from
			b.byAddr.Store(from, pub)
		}
	}
	if !blocked && pkt[1] == probePong && p != nil {
		p.ack(seq)
	}
	if p == nil && pkt[1] == probeCall {
		b.noteStrangerLocked(from, time.Now()) // answered by a handshake once we learn of it
	}
	b.mu.Unlock()
	if !blocked && pkt[1] == probeCall && p != nil && b.onCall != nil {
		b.onCall(pub)
	}
	if !blocked && pkt[1] == probePing && c != nil && p != nil {
		c.WriteToUDPAddrPort(b.probe(probePong, pub, seq, stamp), from)
	}
}

// noteHandshake records a received WireGuard handshake message from the
// peer, or queues a poke when it sends transport data with no handshake
// seen since this node started (see stalePokeEvery). It reports whether
// the packets must be dropped: a handshake initiation from a peer that is
// not a WireGuard peer yet is dropped here, not left to race the tunnel
// adding the peer — WireGuard would answer it if the peer were added in
// time, crossing the handshake the tunnel starts, and both would fail
// until WireGuard's 5 s retry.
func (b *PathBind) noteHandshake(pp *peerPath, pub key.PublicKey, typ byte) (drop bool) {
	if !pp.wg.Load() && (typ == wgInitiationType || typ == wgTransportType) {
		// WireGuard does not know the peer yet: make it a WireGuard peer
		// and answer with a handshake of ours.
		b.wake(pp, pub)
		return true
	}
	switch typ {
	case wgInitiationType, wgResponseType:
		pp.handshook.Store(true)
	case wgTransportType:
		if !pp.handshook.Load() {
			b.wake(pp, pub)
		}
	}
	return false
}

// wake queues pub for the tunnel to handshake with, at most once per
// stalePokeEvery per peer.
func (b *PathBind) wake(pp *peerPath, pub key.PublicKey) {
	now := time.Now().UnixNano()
	if last := pp.pokedAt.Load(); now-last < int64(stalePokeEvery) || !pp.pokedAt.CompareAndSwap(last, now) {
		return
	}
	select {
	case b.stale <- pub:
	default:
	}
}

// SetWG records whether pub is a WireGuard peer of the device: packets
// from a peer that is not make the tunnel add it (see Stale).
func (b *PathBind) SetWG(pub key.PublicKey, on bool) {
	b.mu.Lock()
	p := b.paths[pub]
	b.mu.Unlock()
	if p != nil {
		p.wg.Store(on)
		if on {
			p.pokedAt.Store(0)
		}
	}
}

// Stale delivers peers whose packets show a keypair from before this node
// started: the tunnel answers each with a handshake.
func (b *PathBind) Stale() <-chan key.PublicKey { return b.stale }

// Call asks peer, by an authenticated probe to its direct address, to dial a
// session to this node. Of two peers that both want a session, only the
// one with the smaller key initiates WireGuard's handshake: two
// initiations crossing on the wire each overwrite the other's handshake
// state and cost WireGuard's 5 s retry.
func (b *PathBind) Call(pub key.PublicKey) {
	if b.probeKey == nil {
		return
	}
	b.mu.Lock()
	c := b.conn
	var to netip.AddrPort
	if p := b.paths[pub]; p != nil && !b.blocked(pub) {
		to = p.direct
	}
	b.mu.Unlock()
	if c != nil && to.IsValid() {
		c.WriteToUDPAddrPort(b.probe(probeCall, pub, 0, 0), to)
	}
}

// freshLocked reports whether an authentic probe from peer p is new, and
// if so records it: a pong must answer the ping in flight with its seq and
// stamp, not yet answered; any other kind must carry a stamp newer than the
// last one taken from p.
func (b *PathBind) freshLocked(p *peerPath, kind byte, seq, stamp uint64) bool {
	if kind == probePong {
		i := seq % probeRing
		return p.sent[i] == seq && p.stamps[i] == stamp && !p.acked[i]
	}
	if stamp <= p.lastStamp {
		return false
	}
	p.lastStamp = stamp
	return true
}

// Endpoint is a WireGuard endpoint: a peer (sent to on its current path)
// or, for packets from an address no peer is known at, just that address.
type Endpoint struct {
	Peer key.PublicKey
	Addr netip.AddrPort
	_    atomic.Bool // noCopy-ish: endpoints are shared by pointer
}

var _ conn.Endpoint = (*Endpoint)(nil)

func (e *Endpoint) ClearSrc()           {}
func (e *Endpoint) SrcToString() string { return "" }
func (e *Endpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e *Endpoint) DstIP() netip.Addr   { return e.Addr.Addr() }
func (e *Endpoint) DstToString() string {
	if !e.Peer.IsZero() {
		return e.Peer.Hex()
	}
	return e.Addr.String()
}
func (e *Endpoint) DstToBytes() []byte {
	if !e.Peer.IsZero() {
		return e.Peer[:]
	}
	b, _ := e.Addr.MarshalBinary()
	return b
}

// SetPeerNamer sets the function that names peers in logs and errors (nil:
// a short form of the key).
func (b *PathBind) SetPeerNamer(f func(key.PublicKey) string) {
	if f == nil {
		b.namer.Store(nil)
		return
	}
	b.namer.Store(&f)
}

// peerName names pub for logs: the namer's answer, else the key's short
// form.
func (b *PathBind) peerName(pub key.PublicKey) string {
	if f := b.namer.Load(); f != nil {
		if s := (*f)(pub); s != "" {
			return s
		}
	}
	return pub.ShortString()
}
