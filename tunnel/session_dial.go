package tunnel

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/tunnel/internal/framing"
)

// Getting a peer's session up: dialling it with backoff (dialLoop), dialling
// when the peer asks us to (calledBy), and accepting the one it dials
// (acceptSession).

// dialTimeout bounds one attempt to dial a peer's session port. The first
// attempts are shorter (firstDialTimeout, doubling): a SYN lost before the
// WireGuard handshake completed (the peer restarted, or learned of us just
// now) is resent by a new attempt sooner than by TCP's SYN backoff.
const (
	dialTimeout      = 5 * time.Second
	firstDialTimeout = time.Second
)

// Redial backoff bounds.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// dialLoop dials a session while one is needed and none is held, serves
// it, and redials with backoff when it breaks and is still needed. It ends
// (and the peer costs nothing again) once no session is needed, or when
// the peer's own session serves.
func (p *peer) dialLoop() {
	defer p.wg.Done()
	trace(p.t.pub, p.pub, "dial")
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
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(p.ctx, attemptTimeout)
		c, err := p.t.net.DialTCP(ctx, netip.AddrPortFrom(p.ip, SessionPort))
		cancel()
		attemptTimeout = min(attemptTimeout*2, dialTimeout)
		if err == nil {
			trace(p.t.pub, p.pub, "tcp connected")
			if err = p.t.authSession(p.ctx, c, p.pub, true); err != nil {
				c.Close()
				if p.ctx.Err() == nil && p.t.authLog.allow(time.Now()) {
					p.logger().Warn("tunnel: session handshake failed; not using it", "err", err)
				}
			}
		}
		if err == nil {
			attemptTimeout = firstDialTimeout
			sess, err := yamux.Client(framing.NewConn(c), p.t.ymxCfg)
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

// callHold: a call (PathBind.Call: "dial me", sent by nodes of earlier
// versions, whose larger key asked the smaller to dial) makes this node dial
// for callHold.
const callHold = 3 * time.Second

// calledBy handles the peer's request to dial it.
func (p *peer) calledBy() {
	trace(p.t.pub, p.pub, "called")
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
		trace(p.t.pub, p.pub, "tcp accepted")
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
		sess, err := yamux.Server(framing.NewConn(c), p.t.ymxCfg)
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
