package tunnel

import (
	"context"
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

// dialTimeout bounds one attempt to dial a peer's session port.
const dialTimeout = 5 * time.Second

// pokeDelay is how long the accepting side waits for the dialer's
// handshake before initiating one itself (see pokeIfSilent).
const pokeDelay = 500 * time.Millisecond

// maxRTTSample bounds the ping RTTs that feed the smoothed RTT.
const maxRTTSample = time.Second

// Redial backoff bounds.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// peer is one remote node: its WireGuard identity and its yamux session.
type peer struct {
	// immutable
	t      *Tunnel
	pub    key.PublicKey
	ip     netip.Addr
	dialer bool // this node has the smaller key and dials the session
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	endpoint netip.AddrPort // guarded by t.mu

	rtt      atomic.Int64 // nanoseconds of the last ping; 0 unknown
	srtt     atomic.Int64 // smoothed RTT (EWMA 1/8), nanoseconds
	lastPong atomic.Int64 // unix nanoseconds of the last answered ping
	pingSent atomic.Int64 // unix nanoseconds the outstanding ping was sent; 0 none

	mu    sync.Mutex
	sess  *yamux.Session // guarded by mu; nil when down
	ready chan struct{}  // guarded by mu; closed while sess != nil
}

func newPeer(t *Tunnel, pub key.PublicKey) *peer {
	p := &peer{
		t:      t,
		pub:    pub,
		ip:     pub.MeshIP(),
		dialer: t.pub.Less(pub),
		ready:  make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	return p
}

func (p *peer) start() {
	p.wg.Add(1)
	if p.dialer {
		go p.dialLoop()
	} else {
		go p.pokeIfSilent()
	}
}

// pokeIfSilent covers the dialer's first handshake initiation having
// arrived before this node knew its key (WireGuard drops it and retries
// only after 5 s): if no session is up pokeDelay after the peer was added,
// this side initiates a handshake once, by turning on its keepalive.
func (p *peer) pokeIfSilent() {
	defer p.wg.Done()
	select {
	case <-p.ctx.Done():
		return
	case <-p.readyChan():
		return
	case <-time.After(pokeDelay):
	}
	p.t.ipcMu.Lock()
	err := p.t.dev.IpcSet("public_key=" + p.pub.Hex() + "\nupdate_only=true\npersistent_keepalive_interval=25\n")
	p.t.ipcMu.Unlock()
	if err != nil && p.ctx.Err() == nil {
		p.logger().Debug("tunnel: poke peer", "err", err)
	}
}

func (p *peer) readyChan() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready
}

// stop closes the session and waits for the peer's goroutines.
func (p *peer) stop() {
	p.cancel()
	p.mu.Lock()
	s := p.sess
	p.mu.Unlock()
	if s != nil {
		s.Close()
	}
	p.wg.Wait()
}

func (p *peer) logger() *slog.Logger {
	return p.t.log.With("peer", p.t.bind.peerName(p.pub))
}

// dialLoop keeps one session to the peer, redialling with backoff.
func (p *peer) dialLoop() {
	defer p.wg.Done()
	backoff := minBackoff
	for p.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
		c, err := p.t.net.DialTCP(ctx, netip.AddrPortFrom(p.ip, SessionPort))
		cancel()
		if err == nil {
			sess, err := yamux.Client(newFrameConn(c), p.t.ymxCfg)
			if err != nil {
				c.Close()
			} else {
				started := time.Now()
				p.serve(sess)
				if time.Since(started) > 10*time.Second {
					backoff = minBackoff
				}
			}
		} else if p.ctx.Err() == nil {
			p.logger().Debug("tunnel: dial session", "err", err)
		}
		jitter := time.Duration(rand.Int64N(int64(backoff) / 2))
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(backoff + jitter):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// acceptSession takes a session connection the peer dialled.
func (p *peer) acceptSession(c net.Conn) {
	sess, err := yamux.Server(newFrameConn(c), p.t.ymxCfg)
	if err != nil {
		c.Close()
		return
	}
	if p.ctx.Err() != nil {
		sess.Close()
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.serve(sess)
	}()
}

// serve installs sess as the peer's session, accepts its streams and pings
// it until it closes, then uninstalls it.
func (p *peer) serve(sess *yamux.Session) {
	p.mu.Lock()
	old := p.sess
	p.sess = sess
	if old == nil {
		close(p.ready)
	}
	p.mu.Unlock()
	if old != nil {
		old.Close()
	}
	p.logger().Info("tunnel: session up", "dialer", p.dialer)

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
		p.t.wg.Add(1)
		go func() {
			defer p.t.wg.Done()
			p.t.cfg.HandleStream(p.pub, s)
		}()
	}
	sess.Close()
	wg.Wait()

	p.mu.Lock()
	if p.sess == sess {
		p.sess = nil
		p.ready = make(chan struct{})
	}
	p.mu.Unlock()
	p.rtt.Store(0)
	p.pingSent.Store(0)
	if p.ctx.Err() == nil {
		p.logger().Info("tunnel: session down")
	}
}

// pingLoop measures RTT and liveness. One ping is outstanding at a time;
// while it waits, pingSent tells how long the peer has been silent. A ping
// unanswered for the session timeout closes the session (yamux's Ping
// gives up after ConnectionWriteTimeout); shorter stalls are ridden out.
func (p *peer) pingLoop(sess *yamux.Session) {
	tick := time.NewTicker(p.t.cfg.PingInterval)
	defer tick.Stop()
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
		select {
		case <-tick.C:
		case <-sess.CloseChan():
			return
		}
	}
}

// openStream opens a stream on the peer's session, waiting for one.
func (p *peer) openStream(ctx context.Context) (net.Conn, error) {
	for {
		p.mu.Lock()
		s, ready := p.sess, p.ready
		p.mu.Unlock()
		if s != nil {
			st, err := s.OpenStream()
			if err == nil {
				return st, nil
			}
			if !s.IsClosed() {
				return nil, fmt.Errorf("tunnel: open stream to %s: %w", p.t.bind.peerName(p.pub), err)
			}
			select { // wait for serve to notice and uninstall it
			case <-ctx.Done():
				return nil, fmt.Errorf("tunnel: open stream to %s: %w", p.t.bind.peerName(p.pub), ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("tunnel: no session to %s: %w", p.t.bind.peerName(p.pub), ctx.Err())
		case <-p.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (p *peer) stats() PeerStats {
	st := PeerStats{Endpoint: p.endpoint, RTT: time.Duration(p.rtt.Load()), SRTT: time.Duration(p.srtt.Load()),
		LastPong: unixNano(p.lastPong.Load()), PingPending: unixNano(p.pingSent.Load())}
	p.mu.Lock()
	if p.sess != nil && !p.sess.IsClosed() {
		st.SessionUp = true
		st.Streams = p.sess.NumStreams()
	}
	p.mu.Unlock()
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
