package tunnel

import (
	"context"
	"errors"
	"io"
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
		var conn io.ReadWriteCloser
		var proof *provenConn
		if err == nil {
			trace(p.t.pub, p.pub, "tcp connected")
			if conn, proof, err = p.authDial(c); err != nil {
				c.Close()
				if p.ctx.Err() == nil && p.t.authLog.allow(time.Now()) {
					p.logger().Warn("tunnel: session handshake failed; not using it", "err", err)
				}
			}
		}
		if err == nil {
			attemptTimeout = firstDialTimeout
			sess, err := yamux.Client(conn, p.t.ymxCfg)
			if err != nil {
				conn.Close()
			} else {
				started := time.Now()
				p.serve(sess, receivedOf(conn), true, proof)
				if time.Since(started) > 10*time.Second {
					backoff = minBackoff
				}
				if proof != nil && proof.wait(context.Background()) != nil {
					// The acceptor did not prove its key to the MSA2
					// hello (see provenConn): the next dial, at once,
					// uses MSA1 (proofChecked).
					continue
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

// authDial authenticates a session connection this node dialled: MSA2 if
// the peer has not failed it lately (the hello leaves with yamux's first
// frames, and proof is the connection that checks the answer), else MSA1.
// conn is what yamux runs on.
func (p *peer) authDial(c net.Conn) (conn io.ReadWriteCloser, proof *provenConn, err error) {
	if p.optimistic(time.Now()) {
		p.t.authCount.dial2.Add(1)
		trace(p.t.pub, p.pub, "hello sent")
		proof, err = p.t.dial2(c, p, p.proofChecked)
		return proof, proof, err
	}
	p.t.authCount.dial1.Add(1)
	if err := p.t.authSession(p.ctx, c, p.pub, true); err != nil {
		return nil, nil, err
	}
	trace(p.t.pub, p.pub, "session proven")
	return framing.NewConn(c), nil, nil
}

// proofChecked is told how the acceptor answered an MSA2 hello. Anything
// but its proof: dial it with MSA1 for msa1Hold.
func (p *peer) proofChecked(err error) {
	if err == nil {
		trace(p.t.pub, p.pub, "session proven")
		return
	}
	if p.ctx.Err() != nil {
		return // closing: says nothing of the peer
	}
	p.t.authCount.fallbacks.Add(1)
	p.msa1Until.Store(time.Now().Add(msa1Hold).UnixNano())
	switch {
	case errors.Is(err, errPeerMSA1), errors.Is(err, errHelloRefused):
		p.logger().Debug("tunnel: session hello not taken; using MSA1 with the peer", "err", err, "for", msa1Hold)
	case p.t.authLog.allow(time.Now()):
		p.logger().Warn("tunnel: session peer did not prove its key; using MSA1 with it", "err", err, "for", msa1Hold)
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
		answer, err := p.t.acceptAuth(p.ctx, c, p)
		if errors.Is(err, errHelloStale) {
			p.t.authCount.refused.Add(1)
			closeAfterRefusal(c) // before pendingAccepts lets another in
		}
		p.mu.Lock()
		p.pendingAccepts--
		p.mu.Unlock()
		switch {
		case errors.Is(err, errHelloStale):
			p.logger().Debug("tunnel: session hello refused", "err", err)
			return
		case err != nil:
			c.Close()
			if p.ctx.Err() == nil && p.t.authLog.allow(time.Now()) {
				p.logger().Warn("tunnel: refused a session that did not prove the peer's key", "err", err)
			}
			return
		}
		f := framing.NewConn(c)
		if answer != nil {
			p.t.authCount.accept2.Add(1)
			f.Hold(answer) // leaves with yamux's first frames
		} else {
			p.t.authCount.accept1.Add(1)
		}
		trace(p.t.pub, p.pub, "session proven")
		sess, err := yamux.Server(f, p.t.ymxCfg)
		if err != nil {
			c.Close()
			return
		}
		// The peer may have stopped during the handshake: its context
		// then ends the session serve installs.
		defer context.AfterFunc(p.ctx, func() { sess.Close() })()
		p.serve(sess, receivedOf(f), false, nil)
	}()
}
