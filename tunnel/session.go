package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/internal/key"
)

// dialTimeout bounds one attempt to dial a peer's session port. The first
// attempts are shorter (firstDialTimeout, doubling): a SYN lost before the
// WireGuard handshake completed (the peer restarted, or learned of us just
// now) is resent by a new attempt sooner than by TCP's SYN backoff.
const (
	dialTimeout      = 5 * time.Second
	firstDialTimeout = time.Second
)

// maxRTTSample bounds the ping RTTs that feed the smoothed RTT.
const maxRTTSample = time.Second

// Redial backoff bounds.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
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
// stream to it (openStream), or the peer dials one. Of the two, the
// smaller key dials; the larger asks it to (callPeer) and dials itself only
// if no session comes. The side that needed the session owns it and closes
// it when idle (closeIdle). When both dialled, both sessions serve until
// the redundant one is closed; new streams prefer the one dialled by the
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
}

func newPeer(t *Tunnel, pub key.PublicKey) *peer {
	p := &peer{
		t:     t,
		pub:   pub,
		ip:    pub.MeshIP(),
		ready: make(chan struct{}),
	}
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

// dialLoop dials a session while one is needed and none is held, serves
// it, and redials with backoff when it breaks and is still needed. It ends
// (and the peer costs nothing again) once no session is needed, or when
// the peer's own session serves.
func (p *peer) dialLoop() {
	defer p.wg.Done()
	p.t.ensureWG(p)
	backoff := minBackoff
	attemptTimeout := firstDialTimeout
	for {
		p.mu.Lock()
		if !p.needLocked() || p.out != nil || p.in != nil {
			p.dialing = false
			p.quietSince = time.Now()
			p.syncActiveLocked()
			p.mu.Unlock()
			return
		}
		callFirst := !p.prefersOut() && time.Now().After(p.called)
		p.mu.Unlock()
		if callFirst && p.callPeer() {
			continue // its session is up
		}
		ctx, cancel := context.WithTimeout(p.ctx, attemptTimeout)
		c, err := p.t.net.DialTCP(ctx, netip.AddrPortFrom(p.ip, SessionPort))
		cancel()
		attemptTimeout = min(attemptTimeout*2, dialTimeout)
		if err == nil {
			if err = p.t.authSession(p.ctx, c, p.pub, true); err != nil {
				c.Close()
				if p.ctx.Err() == nil && p.t.authLog.allow(time.Now()) {
					p.logger().Warn("tunnel: session handshake failed; not using it", "err", err)
				}
			}
		}
		if err == nil {
			attemptTimeout = firstDialTimeout
			sess, err := yamux.Client(newFrameConn(c), p.t.ymxCfg)
			if err != nil {
				c.Close()
			} else {
				started := time.Now()
				p.serve(sess, true)
				if time.Since(started) > 10*time.Second {
					backoff = minBackoff
				}
				p.mu.Lock()
				again := p.needLocked()
				p.mu.Unlock()
				if !again {
					continue // ends the loop
				}
			}
		} else if p.ctx.Err() == nil {
			p.logger().Debug("tunnel: dial session", "err", err)
		}
		jitter := time.Duration(rand.Int64N(int64(backoff) / 2))
		select {
		case <-p.ctx.Done():
		case <-time.After(backoff + jitter):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// Calling: of two peers, the larger key asks the smaller to dial (see
// PathBind.Call) callTries times, callEvery apart, before it dials itself.
// A call makes the callee dial for callHold.
const (
	callTries = 3
	callEvery = 150 * time.Millisecond
	callHold  = 3 * time.Second
)

// callPeer asks the peer to dial us and waits for its session; it reports
// whether one came up.
func (p *peer) callPeer() bool {
	ready := p.readyChan()
	for range callTries {
		p.t.bind.Call(p.pub)
		select {
		case <-ready:
			return true
		case <-p.ctx.Done():
			return false
		case <-time.After(callEvery):
		}
	}
	return false
}

// calledBy handles the peer's request to dial it.
func (p *peer) calledBy() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.called = time.Now().Add(callHold)
	p.ensureDialLocked()
}

// acceptSession takes a session connection the peer dialled.
// The dialer must first prove it holds the peer's private key
// (authSession); at most maxPendingAccepts handshakes run per peer.
func (p *peer) acceptSession(c net.Conn) {
	p.mu.Lock()
	if p.ctx.Err() != nil || p.pendingAccepts >= maxPendingAccepts {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.pendingAccepts++
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		err := p.t.authSession(p.ctx, c, p.pub, false)
		p.mu.Lock()
		p.pendingAccepts--
		p.mu.Unlock()
		if err != nil {
			c.Close()
			if p.ctx.Err() == nil && p.t.authLog.allow(time.Now()) {
				p.logger().Warn("tunnel: refused a session that did not prove the peer's key", "err", err)
			}
			return
		}
		sess, err := yamux.Server(newFrameConn(c), p.t.ymxCfg)
		if err != nil {
			c.Close()
			return
		}
		// The peer may have stopped during the handshake: its context
		// then ends the session serve installs.
		defer context.AfterFunc(p.ctx, func() { sess.Close() })()
		p.serve(sess, false)
	}()
}

// serve installs sess as the peer's session (dialled by this node when out)
// accepts its streams and pings it until it closes, then uninstalls it.
func (p *peer) serve(sess *yamux.Session, out bool) {
	p.mu.Lock()
	var old *yamux.Session
	if out {
		old, p.out = p.out, sess
		p.outOwned = p.want || p.waiters > 0 // else dialled only because the peer called
	} else {
		old, p.in = p.in, sess
		p.inOwned = p.dialing // we were calling for it
	}
	p.called = time.Time{} // a call is answered by any session
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
	p.syncActiveLocked()
	p.mu.Unlock()
	if old != nil {
		old.Close() // the peer redialled: its old session is gone
	}
	p.logger().Debug("tunnel: session up", "dialled", out)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.pingLoop(sess)
	}()
	for {
		s, err := sess.AcceptStream()
		if err != nil {
			break
		}
		p.markBusy()
		p.t.wg.Add(1)
		go func() {
			defer p.t.wg.Done()
			p.t.cfg.HandleStream(p.pub, s)
		}()
	}
	sess.Close()
	wg.Wait()

	p.mu.Lock()
	if out && p.out == sess {
		p.out = nil
	} else if !out && p.in == sess {
		p.in = nil
	}
	none := p.out == nil && p.in == nil
	if none {
		select {
		case <-p.ready:
			p.ready = make(chan struct{})
		default:
		}
		p.rtt.Store(0)
		p.pingSent.Store(0)
		p.quietSince = time.Now()
		p.ensureDialLocked() // the peer's session broke and we still need one
	}
	p.syncActiveLocked()
	p.mu.Unlock()
	if p.ctx.Err() == nil {
		p.logger().Debug("tunnel: session down", "dialled", out)
	}
}

// busyWindow is how long after its last stream a session counts as busy:
// pinged every PingInterval, its path probed every probeEvery; after it,
// every IdlePingInterval and probeIdleEvery.
const busyWindow = 3 * time.Second

// busy reports whether the session carries or recently carried a stream.
func (p *peer) busy(sess *yamux.Session, now time.Time) bool {
	if sess.NumStreams() > 0 {
		p.lastBusy.Store(now.UnixNano())
		return true
	}
	return now.Sub(time.Unix(0, p.lastBusy.Load())) < busyWindow
}

// markBusy records a stream opened or accepted now; a session that was
// idle gets its fast probes back at once.
func (p *peer) markBusy() {
	now := time.Now().UnixNano()
	if old := p.lastBusy.Swap(now); now-old >= int64(busyWindow) {
		p.t.bind.SetBusy(p.pub, true)
	}
}

// pingLoop measures RTT and liveness. One ping is outstanding at a time;
// while it waits, pingSent tells how long the peer has been silent. A ping
// unanswered for the session timeout closes the session (yamux's Ping
// gives up after ConnectionWriteTimeout); shorter stalls are ridden out.
// A busy session is pinged every PingInterval, an idle one every
// IdlePingInterval.
func (p *peer) pingLoop(sess *yamux.Session) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	wasBusy := true
	for {
		p.pingSent.Store(time.Now().UnixNano())
		rtt, err := sess.Ping()
		if err != nil {
			if !sess.IsClosed() {
				p.logger().Warn("tunnel: session unresponsive; closing", "err", err)
				sess.Close()
			}
			return
		}
		now := time.Now()
		if silent := now.Sub(time.Unix(0, p.pingSent.Load())); silent > time.Second {
			p.logger().Debug("tunnel: session answering again", "silent", silent.Round(time.Millisecond))
		}
		p.lastPong.Store(now.UnixNano())
		p.pingSent.Store(0)
		rtt = max(rtt, time.Microsecond)
		p.rtt.Store(int64(rtt))
		// A ping that waited out a stall measures the stall, not the path:
		// it would inflate the smoothed RTT and with it every deadline
		// derived from it, just as the peer comes back.
		if old := time.Duration(p.srtt.Load()); old == 0 {
			p.srtt.Store(int64(rtt))
		} else if rtt < maxRTTSample {
			p.srtt.Store(int64(old - old/8 + rtt/8))
		}
		busy := p.busy(sess, now)
		if busy != wasBusy {
			p.t.bind.SetBusy(p.pub, busy)
			wasBusy = busy
		}
		wait := p.t.cfg.IdlePingInterval
		if busy {
			wait = p.t.cfg.PingInterval
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-sess.CloseChan():
			return
		}
	}
}

// openStream opens a stream on the peer's session, dialling one on demand
// and waiting for it (until ctx ends). It returns the session the stream
// is on.
func (p *peer) openStream(ctx context.Context) (net.Conn, *yamux.Session, error) {
	for {
		p.mu.Lock()
		if s := p.curLocked(); s != nil {
			p.opening++
			p.mu.Unlock()
			st, err := s.OpenStream()
			p.mu.Lock()
			p.opening--
			p.mu.Unlock()
			if err == nil {
				p.markBusy()
				return st, s, nil
			}
			if !s.IsClosed() && !errors.Is(err, yamux.ErrRemoteGoAway) {
				return nil, nil, fmt.Errorf("tunnel: open stream to %s: %w", p.t.bind.peerName(p.pub), err)
			}
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil { // wait for serve to notice and uninstall it
				return nil, nil, fmt.Errorf("tunnel: open stream to %s: %w", p.t.bind.peerName(p.pub), err)
			}
			continue
		}
		ready := p.ready
		select {
		case <-ready: // a closed session not uninstalled yet
			p.mu.Unlock()
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return nil, nil, fmt.Errorf("tunnel: open stream to %s: %w", p.t.bind.peerName(p.pub), err)
			}
			continue
		default:
		}
		p.waiters++
		p.ensureDialLocked()
		p.mu.Unlock()
		var err error
		select {
		case <-ready:
		case <-ctx.Done():
			err = fmt.Errorf("tunnel: no session to %s: %w", p.t.bind.peerName(p.pub), ctx.Err())
		case <-p.ctx.Done():
			err = ErrClosed
		}
		p.mu.Lock()
		p.waiters--
		p.mu.Unlock()
		if err != nil {
			return nil, nil, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
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
		p.out = nil // no new stream goes to it from now on
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

// defaultStreamWindow is the most a yamux stream may have in flight: one
// stream moves at most window/RTT (4 MiB over 50 ms: 84 MB/s; yamux's
// 256 KiB default would cap it at 5 MB/s), and a stream whose local reader
// stalls buffers at most this much on the receiving node.
const defaultStreamWindow = 4 << 20

// yamuxConfig sizes yamux for the mesh: liveness comes from our own ping
// loop, so yamux's keepalive is off.
func yamuxConfig(cfg Config, lg *slog.Logger, window uint32) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 1024
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = cfg.SessionTimeout
	c.MaxStreamWindowSize = window
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 30 * time.Second
	c.LogOutput = nil
	c.Logger = log.New(&logWriter{lg: lg.With("component", "yamux")}, "", 0)
	return c
}

// logWriter adapts a *log.Logger's output to slog, one record per line.
type logWriter struct{ lg *slog.Logger }

func (w *logWriter) Write(b []byte) (int, error) {
	msg := strings.TrimSpace(string(b))
	lvl := slog.LevelDebug
	if strings.HasPrefix(msg, "[ERR]") || strings.HasPrefix(msg, "[WARN]") {
		lvl = slog.LevelWarn
	}
	if strings.Contains(msg, "session shutdown") || strings.Contains(msg, io.EOF.Error()) ||
		strings.Contains(msg, net.ErrClosed.Error()) {
		lvl = slog.LevelDebug
	}
	w.lg.Log(context.Background(), lvl, msg)
	return len(b), nil
}
