package tunnel

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/internal/key"
)

// Session states as status reports them (docs/formats.md): a session is held (up),
// none is held nor needed and one is opened on demand (idle), or one is
// needed and being dialled (down).
const (
	SessionStateUp   = "up"
	SessionStateIdle = "idle"
	SessionStateDown = "down"
)

// peer is one remote node: its WireGuard identity and its yamux sessions.
//
// Sessions are made on demand (README "Performance", fleet scale): a peer has no goroutine, timer or
// buffer of its own until this node wants a session with it (SetWarm) or a
// stream to it (openStream), or the peer dials one. The side that needs the
// session dials it (one WireGuard handshake: PathBind.noteHandshake keeps
// two from crossing when both dial at once), owns it and closes it when
// idle (closeIdle). When both dialled, both sessions serve until the
// redundant one is closed; new streams prefer the one dialled by the
// smaller key, so both sides pick the same.
type peer struct {
	// immutable
	t      *Tunnel
	pub    key.PublicKey
	ip     netip.Addr
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	endpoint netip.AddrPort // guarded by t.mu

	rtt      atomic.Int64 // nanoseconds of the last ping; 0 unknown
	srtt     atomic.Int64 // smoothed RTT (EWMA 1/8), nanoseconds
	lastPong atomic.Int64 // unix nanoseconds of the last answered ping
	pingSent atomic.Int64 // unix nanoseconds the outstanding ping was sent; 0 none
	lastBusy atomic.Int64 // unix nanoseconds a stream was last opened, accepted or seen open

	mu      sync.Mutex
	out     *yamux.Session // guarded by mu; dialled by this node, nil when none
	in      *yamux.Session // guarded by mu; dialled by the peer, nil when none
	ready   chan struct{}  // guarded by mu; closed while out or in is set
	want    bool           // guarded by mu; in a warm set: keep a session up
	waiters int            // guarded by mu; openStream calls waiting for a session
	opening int            // guarded by mu; streams being opened right now
	dialing bool           // guarded by mu; dialLoop runs
	called  time.Time      // guarded by mu; the peer asked us to dial it until then
	// outProof: out's connection while it runs MSA2 (sessionauth.go),
	// whose answer may still be on its way; nil after MSA1. Guarded by mu.
	outProof *provenConn

	pendingAccepts int // guarded by mu; session handshakes in progress (acceptSession)
	// Each session is owned by the side that needed it (dialled it on its
	// own behalf, or called for it): only the owner closes it when idle.
	outOwned bool // guarded by mu
	inOwned  bool // guarded by mu
	// quietSince: when the peer last had no session and no dial (guarded
	// by mu). wgOn and wgSince: it is a WireGuard peer of the device,
	// since then (guarded by t.ipcMu).
	quietSince time.Time
	wgOn       bool
	wgSince    time.Time

	// Session authentication (sessionauth.go). As the acceptor: the
	// greatest MSA2 stamp taken from the peer. As the dialer: the last
	// stamp sent, and until when (unix nanoseconds) to use MSA1 with it.
	stamps    *helloStamps
	stampSent atomic.Int64
	msa1Until atomic.Int64
}

func newPeer(t *Tunnel, pub key.PublicKey) *peer {
	p := &peer{
		t:     t,
		pub:   pub,
		ip:    pub.MeshIP(),
		ready: make(chan struct{}),
	}
	p.stamps = newHelloStamps(t.helloClock())
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	return p
}

// prefersOut tells whether this node's own dialled session is the one new
// streams use when both exist: the smaller key's dialled session wins.
func (p *peer) prefersOut() bool { return p.t.pub.Less(p.pub) }

// curLocked is the session new streams go to, nil when none is open.
func (p *peer) curLocked() *yamux.Session {
	out, in := p.out, p.in
	if out != nil && out.IsClosed() {
		out = nil
	}
	if in != nil && in.IsClosed() {
		in = nil
	}
	switch {
	case out != nil && in != nil:
		if p.prefersOut() {
			return out
		}
		return in
	case out != nil:
		return out
	}
	return in
}

// stateLocked is the peer's session state (SessionState*).
func (p *peer) stateLocked() string {
	switch {
	case p.out != nil || p.in != nil:
		return SessionStateUp
	case p.dialing:
		return SessionStateDown
	}
	return SessionStateIdle
}

// syncActiveLocked tells the bind whether to probe the peer's path: only
// while a session is held or being dialled.
func (p *peer) syncActiveLocked() {
	p.t.bind.SetActive(p.pub, p.out != nil || p.in != nil || p.dialing)
	p.t.bind.SetPassive(p.pub, !p.ownsLocked())
}

// ownsLocked reports whether this node needs the peer's session: warm, a
// stream waits, it holds a session it owns, or none is up yet. (A dial
// loop serves the session it dialled, so dialing stays set while it is
// up: it says nothing of who needs it.)
func (p *peer) ownsLocked() bool {
	return p.want || p.waiters > 0 || (p.out != nil && p.outOwned) || (p.in != nil && p.inOwned) ||
		(p.out == nil && p.in == nil)
}

// needLocked tells whether a session is needed: warm, a stream waits for
// one, or the peer asked us to dial it.
func (p *peer) needLocked() bool {
	return p.ctx.Err() == nil && (p.want || p.waiters > 0 || time.Now().Before(p.called))
}

// ensureDialLocked starts the dial loop if a session is needed, none is
// held and none is being dialled.
func (p *peer) ensureDialLocked() {
	if p.dialing || !p.needLocked() || p.out != nil || p.in != nil {
		return
	}
	p.dialing = true
	p.wg.Add(1) // under mu with ctx checked: stop cancels before it waits
	go p.dialLoop()
	p.syncActiveLocked()
}

// setWant marks the peer warm (keep a session) or not.
func (p *peer) setWant(want bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = want
	p.ensureDialLocked()
	p.syncActiveLocked()
}

func (p *peer) readyChan() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready
}

// stop closes the sessions and waits for the peer's goroutines.
func (p *peer) stop() {
	p.cancel()
	p.mu.Lock()
	out, in := p.out, p.in
	p.mu.Unlock()
	if out != nil {
		out.Close()
	}
	if in != nil {
		in.Close()
	}
	p.wg.Wait()
	p.t.bind.SetActive(p.pub, false)
}

func (p *peer) logger() *slog.Logger {
	return p.t.log.With("peer", p.t.bind.peerName(p.pub))
}

// closeIdle closes the sessions this node owns that carry no stream, if
// none is being opened, and reports whether it closed any. A session the
// peer owns is the peer's to close.
func (p *peer) closeIdle() bool {
	p.mu.Lock()
	if p.opening > 0 {
		p.mu.Unlock()
		return false
	}
	var closing []*yamux.Session
	if s := p.out; s != nil && p.outOwned && s.NumStreams() == 0 {
		p.out, p.outProof = nil, nil // no new stream goes to it from now on
		closing = append(closing, s)
	}
	if s := p.in; s != nil && p.inOwned && s.NumStreams() == 0 {
		p.in = nil
		closing = append(closing, s)
	}
	if len(closing) > 0 && p.out == nil && p.in == nil {
		p.ready = make(chan struct{})
	}
	p.mu.Unlock()
	for _, s := range closing {
		s.Close()
	}
	if len(closing) > 0 {
		p.logger().Debug("tunnel: idle session closed")
	}
	return len(closing) > 0
}

// closeSpare closes the redundant session (both sides dialled: the one new
// streams do not use) if this node owns it, it carries no stream and none
// is being opened, and reports whether it closed it.
func (p *peer) closeSpare() bool {
	p.mu.Lock()
	if p.out == nil || p.in == nil || p.opening > 0 {
		p.mu.Unlock()
		return false
	}
	spare, owned := p.in, p.inOwned
	if !p.prefersOut() {
		spare, owned = p.out, p.outOwned
	}
	if !owned || spare.NumStreams() > 0 {
		p.mu.Unlock()
		return false
	}
	if spare == p.in {
		p.in = nil
	} else {
		p.out, p.outProof = nil, nil
	}
	p.mu.Unlock()
	spare.Close()
	p.logger().Debug("tunnel: redundant session closed")
	return true
}

// infoLocked summarises the peer's sessions.
func (p *peer) infoLocked() SessionInfo {
	si := SessionInfo{PublicKey: p.pub,
		Owned:     (p.out != nil && p.outOwned) || (p.in != nil && p.inOwned),
		Redundant: p.out != nil && p.in != nil}
	for _, s := range []*yamux.Session{p.out, p.in} {
		if s != nil && !s.IsClosed() {
			si.Streams += s.NumStreams()
		}
	}
	if si.Redundant { // the owned one that new streams do not use
		spare, owned := p.in, p.inOwned
		if !p.prefersOut() {
			spare, owned = p.out, p.outOwned
		}
		si.Redundant = owned
		si.SpareStreams = spare.NumStreams()
	}
	return si
}

func (p *peer) stats() PeerStats {
	st := PeerStats{Endpoint: p.endpoint, RTT: time.Duration(p.rtt.Load()), SRTT: time.Duration(p.srtt.Load()),
		LastPong: unixNano(p.lastPong.Load()), PingPending: unixNano(p.pingSent.Load())}
	p.mu.Lock()
	st.Session = p.stateLocked()
	if s := p.curLocked(); s != nil {
		st.SessionUp = true
	}
	si := p.infoLocked()
	st.Streams, st.Owned, st.Redundant = si.Streams, si.Owned, si.Redundant
	p.mu.Unlock()
	if !st.SessionUp {
		st.RTT, st.SRTT = 0, 0
	}
	return st
}

func unixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
