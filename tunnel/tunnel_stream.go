package tunnel

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/internal/key"
)

// Streams to peers (OpenStream, DialStream) and closing a peer's sessions
// (CloseIdle, ResetSession).

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

// CloseSpare closes the redundant session with pub (see
// SessionInfo.Redundant) if it carries no stream, and reports whether it
// closed it. The session new streams use stays.
func (t *Tunnel) CloseSpare(pub key.PublicKey) bool {
	t.mu.Lock()
	p := t.peers[pub]
	t.mu.Unlock()
	if p == nil {
		return false
	}
	return p.closeSpare()
}

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
		reproved, retried := false, false
		for {
			var sess *yamux.Session
			var proof *provenConn
			// A bare stream is the caller's at once: it goes only on a
			// session whose acceptor has proven its key (MSA2's answer
			// may still be on its way), so it cannot fail because the
			// answer does. A stream with a handshake goes at once: its
			// handshake's answer comes after the acceptor's.
			c, sess, proof, err = p.openStream(ctx, handshake == nil)
			if err == nil && handshake != nil {
				err = runHandshake(ctx, c, handshake)
			}
			again := false
			if err != nil && c != nil && ctx.Err() == nil {
				switch {
				case proof != nil && !reproved && proof.failed(sess):
					// The session's acceptor did not prove its key
					// (an MSA2 hello refused, or a peer of an
					// earlier version): it served nothing of it, and
					// the dial loop redials with MSA1 at once. Once
					// more on that one.
					reproved, again = true, true
				case !retried && sess.IsClosed():
					// A session closed as idle by the peer just as
					// this stream went out on it: the stream says
					// nothing of the peer, so once more on a new
					// session.
					retried, again = true, true
				}
			}
			if !again {
				break
			}
			c.Close()
			c = nil
			p.forget(sess)
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
