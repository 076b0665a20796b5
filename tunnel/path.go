package tunnel

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/pace"
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
	probeCall     = 3 // "dial me": sent by earlier versions (see callHold), answered
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
	// probeSilentAfter, probeSilentEvery: a direct path that never
	// answered since its peer became active and has been silent this long
	// is probed only this often (see probeRecord.schedule).
	probeSilentAfter = time.Minute
	probeSilentEvery = 30 * time.Second
	// probeIdleEvery is the probe interval of a peer whose session carries
	// no stream (see SetBusy) and whose path is direct: a warm candidate's
	// heartbeat, riding the pacer's beat. (On the relay a peer is probed
	// every probeEvery while its direct path answers: probeRecord.schedule.) An exporter N importers keep warm answers N/3 probes a
	// second, each a wakeup (README "Performance": "Idle cost, second pass").
	probeIdleEvery = 3 * time.Second
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
	// initPending is how long after one side's WireGuard initiation the
	// other side's is dropped or withheld (WireGuard's RekeyTimeout: it
	// retries after that, and starts none sooner after a handshake; see
	// noteHandshake); heldInitTTL how long an initiation held for a
	// peer that is not a WireGuard peer yet is worth handing to WireGuard.
	initPending = 5 * time.Second
	heldInitTTL = 5 * time.Second
	// answerGrace: see initSent and noteSent.
	answerGrace = 200 * time.Millisecond
	// resendAfter: see resendInitiation.
	resendAfter = 100 * time.Millisecond
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
	// else is guarded by mu; the probe loop holds it only to copy and to
	// update records, never while it judges peers, logs or sends (see
	// probeLoop).
	// Lock order: Tunnel.mu before PathBind.mu (the tunnel calls the bind
	// holding its lock); the bind never calls the tunnel, the peer namer or
	// the logger, or sends on stale, holding mu.
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
	ecdhPriv  *ecdh.PrivateKey             // guarded by mu; this node's key, for probes' pair MACs (SetPrivateKey)
	strangers map[netip.AddrPort]time.Time // guarded by mu; unknown handshake sources, bounded
	active    map[key.PublicKey]*peerPath  // guarded by mu; the peers probed (see SetActive)
	onCall    func(key.PublicKey)          // set before Open; a peer asks us to dial it
	stale     chan key.PublicKey           // bounded; peers to answer with a handshake (see stalePokeEvery)
	kick      chan struct{}                // one slot: wakes the probe loop (kickLoop)
	pacer     *pace.Pacer                  // paces the loop's idle waits; nil: plain timers (tunnel.Config.Pacer)
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
	choice atomic.Pointer[pathChoice]
	direct netip.AddrPort
	// probeRecord is what judging the peer reads and writes; the probe
	// loop judges a copy of it outside PathBind.mu (see probeLoop).
	probeRecord
	pairKey   []byte                 // probe pairmac key (X25519 of the node keys); nil until first used
	secret    atomic.Pointer[[]byte] // X25519 of the node keys, once computed (see sharedSecret)
	stamps    [probeRing]uint64      // the stamps of sent's probes, which a pong must echo
	lastStamp uint64                 // newest stamp taken from this peer's pings (freshness)
	learned   netip.AddrPort         // source address seen in its probes, if not direct
	// Probe scheduling: only active peers (a session held or being
	// dialled) are probed, every `every` (see probeRecord), next at `next`.
	active  bool
	passive bool // guarded by PathBind.mu: see SetPassive
	next    time.Time

	// WireGuard bytes sent to and received from the peer on any path
	// (not probes, not black-holed packets): atomic, so that metrics and
	// status read them without the device's UAPI lock.
	tx, rx atomic.Uint64
	// pings counts the probes (pings) sent to the peer: probeRecord's seq,
	// readable without PathBind.mu.
	pings atomic.Uint64

	pongAt    atomic.Int64 // unix nanoseconds of the last fresh probe answer (see LastHeard)
	heardAt   atomic.Int64 // unix nanoseconds of the last fresh ping from the peer (see SetPassive)
	handshook atomic.Bool  // a WireGuard handshake message was sent or received
	wg        atomic.Bool  // the peer is a WireGuard peer of the device (see SetWG)
	pokedAt   atomic.Int64 // unix nanoseconds of the last stale-keypair poke

	// WireGuard handshakes with the peer (see noteHandshake): the last
	// initiation this node sent it and when (unix ns), the initiation of
	// those it resent (initAt's value), when the peer's last response came,
	// and an initiation from the peer held while it is not a WireGuard
	// peer of the device yet (see TakeHeld).
	initPkt  atomic.Pointer[[]byte]
	initAt   atomic.Int64
	resentAt atomic.Int64
	respAt   atomic.Int64
	held     atomic.Pointer[heldInit]
	wantWG   atomic.Bool // a probe came while it was not a WireGuard peer (see TakeWantWG)
	// peerInitAt: when an initiation from the peer was last let through to
	// WireGuard; respSentAt: when WireGuard last answered one. hs makes
	// letting the peer's initiation through and sending ours one step
	// each (noteHandshake, noteSent): WireGuard's receive and send run at
	// once.
	peerInitAt atomic.Int64
	respSentAt atomic.Int64
	hs         sync.Mutex
}

// heldInit is a peer's WireGuard initiation the bind holds until the
// tunnel has made the peer a WireGuard peer (see noteHandshake).
type heldInit struct {
	pkt  []byte
	from netip.AddrPort
	at   int64 // unix nanoseconds it came
}

// probeRecord is a peer's probe record and its verdict: all that
// judge reads and writes (see path_judge.go). A plain value:
// copied under PathBind.mu, it is judged without the lock.
type probeRecord struct {
	seq        uint64
	sent       [probeRing]uint64 // seq of recent probes, ring
	acked      [probeRing]bool
	useRelay   bool // send via the relay (when there is one)
	everDirect bool // the direct path was confirmed at least once
	changed    time.Time
	// Probes are sent every `every` (probeEvery, backed off while the
	// direct path does not answer). Probes sent before the peer became
	// active again (seq <= base) are not judged.
	idle  bool // the session carries nothing: probed every probeIdleEvery
	base  uint64
	every time.Duration
	// backedOff: every was doubled because the direct path stopped
	// answering; only an answer (or the peer becoming active again) ends
	// it, not SetBusy, so a peer cannot speed up the probes to the
	// endpoint it advertises by opening a stream now and then.
	backedOff bool
	// silentSince: when the backoff began; heard: a probe was answered
	// since the peer became active (see schedule).
	silentSince time.Time
	heard       bool
}

type relayPacket struct {
	from key.PublicKey
	pkt  []byte
	addr netip.AddrPort // where it came from when not the relay (Reinject)
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
		kick:      make(chan struct{}, 1),
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
		p.base, p.every, p.next, p.idle, p.backedOff = p.seq, probeEvery, time.Time{}, false, false
		p.silentSince, p.heard = time.Time{}, false
		b.active[pub] = p
		b.kickLoop()
	} else {
		delete(b.active, pub)
	}
}

// SetBusy sets how often peer's direct path is probed: every probeEvery
// while its session carries streams (busy), every probeIdleEvery when not
// and its path is direct (see probeRecord.schedule).
// Turning busy probes at the next tick, unless the direct path is backed
// off (it stopped answering): that keeps its interval until an answer.
func (b *PathBind) SetBusy(pub key.PublicKey, busy bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.paths[pub]
	if p == nil || p.idle == !busy {
		return
	}
	p.idle = !busy
	if busy && !p.backedOff {
		p.every, p.next = probeEvery, time.Time{}
		b.kickLoop()
	}
}

// SetPassive marks peer's session as one this node does not need (the
// peer opened it: an importer keeping this exporter warm). While such a
// peer is idle, its path is direct and its own fresh pings keep arriving,
// this node sends it no probes of its own: the peer's pings prove it alive,
// and an exporter that many importers keep warm would otherwise probe each
// of them every probeIdleEvery and take each answer in a wakeup of its own.
// A stream (SetBusy), a path on the relay or a silent peer restores its
// probes.
func (b *PathBind) SetPassive(pub key.PublicKey, passive bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.paths[pub]; p != nil {
		p.passive = passive
	}
}

// LastHeard returns when peer last answered one of this node's path
// probes or sent a fresh ping of its own (zero: never, or probing is
// off). Either proves the peer's process and its direct path alive: an
// idle session needs no ping of its own while its peer is heard (see
// pingLoop).
func (b *PathBind) LastHeard(pub key.PublicKey) time.Time {
	v, ok := b.fast.Load(pub)
	if !ok {
		return time.Time{}
	}
	pp := v.(*peerPath)
	return unixNano(max(pp.pongAt.Load(), pp.heardAt.Load()))
}

// heardRecently reports whether an idle, passive peer on its direct path
// was heard from by its own pings lately, so that it needs no probe of
// ours at now (SetPassive).
func (p *peerPath) heardRecently(now time.Time) bool {
	return p.passive && p.idle && !p.useRelay && now.Sub(unixNano(p.heardAt.Load())) < 2*probeIdleEvery
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

// IsWG reports whether peer is a WireGuard peer of the device (see SetWG).
func (b *PathBind) IsWG(pub key.PublicKey) bool {
	p := b.peer(pub)
	return p != nil && p.wg.Load()
}

// Probes returns how many direct-path probes were sent to peer since it
// was added (peers are probed only while a session is held or being
// dialled); zero for an unknown peer.
func (b *PathBind) Probes(pub key.PublicKey) uint64 {
	p := b.peer(pub)
	if p == nil {
		return 0
	}
	return p.pings.Load()
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
