package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// A session while it is up: serving it (its streams, its pings, busy or
// idle) and opening streams on it.

// maxRTTSample bounds the ping RTTs that feed the smoothed RTT.
const maxRTTSample = time.Second

// serve installs sess as the peer's session (dialled by this node when out)
// accepts its streams and pings it until it closes, then uninstalls it.
// rx counts the bytes read from the session's connection (receivedOf).
func (p *peer) serve(sess *yamux.Session, rx func() uint64, out bool, proof *provenConn) {
	p.mu.Lock()
	var old *yamux.Session
	if out {
		old, p.out = p.out, sess
		p.outProof = proof
		// Ours unless dialled only because the peer called (its session,
		// then: it owns it). A dial of our own that completes after our
		// need ended (a warm set that changed) is still ours to close when
		// idle: the peer did not ask for it, so nobody else would.
		p.outOwned = p.want || p.waiters > 0 || !time.Now().Before(p.called)
	} else {
		old, p.in = p.in, sess
		// Ours if we need it or are dialling one ourselves (both dialled
		// at once): the peer's then is the redundant one or ours.
		p.inOwned = p.dialing || p.want || p.waiters > 0
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
	trace(p.t.pub, p.pub, "session up")

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.pingLoop(sess, rx)
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
		p.out, p.outProof = nil, nil
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

// firstPingAfter is how long after a session comes up its first ping goes.
const firstPingAfter = 50 * time.Millisecond

// idleSessionPingEvery is how often an idle session whose peer answers
// path probes is pinged all the same: the probes prove the peer and its
// path alive, this ping the session itself, end to end.
const idleSessionPingEvery = 10 * time.Second

// pingLoop measures RTT and liveness. One ping is outstanding at a time;
// while it waits, pingSent tells how long the peer has been silent. A
// session whose peer was asked (a ping) and not heard from — no pong, no
// other frame either — for the session timeout is closed (see liveness);
// shorter stalls are ridden out.
// A busy session is pinged every PingInterval. An idle one is looked at
// every IdlePingInterval: if its peer answered a path probe since the last
// look, or was heard by probes lately (LastHeard: a peer that keeps this
// node warm pings it, and is not probed back), that stands for a pong (a
// probe costs two UDP packets; a
// session ping two WireGuard packets and the TCP segments under yamux,
// on both nodes, and an exporter many importers keep warm paid that for
// each), and the session is pinged only every idleSessionPingEvery; if
// not, it is pinged, so a silent peer is seen as soon as before.
func (p *peer) pingLoop(sess *yamux.Session, rx func() uint64) {
	// The first ping waits out the session's first exchanges (the stream
	// it was opened for, its answer), not to compete with them for the
	// two peers' wakeups; pings of an idle session ride the beat.
	timer := p.t.cfg.Pacer.NewTimer(firstPingAfter)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-sess.CloseChan():
		return
	}
	wasBusy := true
	var looked, pinged time.Time
	live := liveness{rx: rx(), heard: time.Now()}
	for {
		now := time.Now()
		// Heard since the last look, or within a probe interval and a
		// half: the peer's own pings (SetPassive) come on its beat, not ours.
		if pong := p.t.bind.LastHeard(p.pub); !wasBusy && (pong.After(looked) || now.Sub(pong) < probeIdleEvery*3/2) &&
			now.Sub(pinged) < idleSessionPingEvery {
			p.lastPong.Store(pong.UnixNano())
		} else {
			if err := p.ping(sess, &live, rx); err != nil {
				return
			}
			pinged = time.Now()
		}
		looked = now
		now = time.Now()
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

// ping sends one session ping and records its answer. No pong within
// yamux's wait (the session timeout) does not by itself close the session:
// on a slow path the pong queues behind the bulk data ahead of it (up to
// the TCP send buffer, 8 MiB), and a session whose peer's frames keep
// arriving is alive; the next ping asks again. A session whose peer is
// gone (liveness.gone) is closed and ping returns the error.
func (p *peer) ping(sess *yamux.Session, live *liveness, rx func() uint64) error {
	now := time.Now()
	live.look(now, rx())
	live.pinged(now)
	p.pingSent.Store(live.asking.UnixNano())
	type answer struct {
		rtt time.Duration
		err error
	}
	ans := make(chan answer, 1)
	go func() { // owned here: ping returns only after it has answered
		rtt, err := sess.Ping()
		ans <- answer{rtt, err}
	}()
	look := time.NewTicker(p.t.cfg.PingInterval)
	defer look.Stop()
	var a answer
wait:
	for {
		select {
		case a = <-ans:
			break wait
		case now := <-look.C:
			live.look(now, rx())
			if live.gone(now, p.t.cfg.SessionTimeout) {
				p.unresponsive(sess, errSilent)
				<-ans
				return errSilent
			}
		}
	}
	if a.err != nil {
		now := time.Now()
		live.look(now, rx())
		switch {
		case sess.IsClosed():
		case !live.gone(now, p.t.cfg.SessionTimeout) &&
			(errors.Is(a.err, yamux.ErrTimeout) || errors.Is(a.err, yamux.ErrConnectionWriteTimeout)):
			p.logger().Debug("tunnel: session ping unanswered, but the peer's frames arrive", "err", a.err,
				"asking", now.Sub(live.asking).Round(time.Millisecond), "heard", now.Sub(live.heard).Round(time.Millisecond))
			return nil
		default:
			p.unresponsive(sess, a.err)
		}
		return a.err
	}
	rtt := a.rtt
	now = time.Now()
	if silent := now.Sub(live.asking); silent > time.Second {
		p.logger().Debug("tunnel: session answering again", "silent", silent.Round(time.Millisecond))
	}
	live.ponged(now)
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
	return nil
}

// errSilent: the session's peer was asked and not heard from for the
// session timeout.
var errSilent = errors.New("tunnel: peer silent for the session timeout")

// unresponsive closes sess, whose peer is gone.
func (p *peer) unresponsive(sess *yamux.Session, err error) {
	if !sess.IsClosed() {
		p.logger().Warn("tunnel: session unresponsive; closing", "err", err)
		sess.Close()
	}
}

// liveness is a session's signs of life, for its ping loop: pongs, and the
// bytes read from its connection growing (any frame of the peer's).
type liveness struct {
	rx     uint64    // bytes read at the last look
	heard  time.Time // the last sign of life
	asking time.Time // when the oldest unanswered ping was sent; zero if none
}

// pinged records a ping sent at now.
func (l *liveness) pinged(now time.Time) {
	if l.asking.IsZero() {
		l.asking = now
	}
}

// ponged records a pong at now: every ping before it is answered.
func (l *liveness) ponged(now time.Time) {
	l.heard, l.asking = now, time.Time{}
}

// look records the bytes read from the connection by now.
func (l *liveness) look(now time.Time, rx uint64) {
	if rx != l.rx {
		l.rx, l.heard = rx, now
	}
}

// gone tells whether the peer is gone at now: asked (a ping unanswered)
// and not heard from, since it was asked, for timeout.
func (l *liveness) gone(now time.Time, timeout time.Duration) bool {
	if l.asking.IsZero() {
		return false
	}
	return now.Sub(later(l.asking, l.heard)) >= timeout
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// receivedOf is c's count of bytes read (framing.Conn.Received), or a
// count that never grows for a connection that does not count (liveness
// then comes from pongs alone).
func receivedOf(c any) func() uint64 {
	if r, ok := c.(interface{ Received() uint64 }); ok {
		return r.Received
	}
	return func() uint64 { return 0 }
}

// openStream opens a stream on the peer's session, dialling one on demand
// and waiting for it (until ctx ends). It returns the session the stream
// is on, and that session's provenConn if it runs MSA2: the acceptor's
// answer may not have come yet, unless proven asked to wait for it before
// opening the stream (a session whose answer failed is dropped, and the
// next one waited for).
func (p *peer) openStream(ctx context.Context, proven bool) (net.Conn, *yamux.Session, *provenConn, error) {
	for {
		p.mu.Lock()
		if s := p.curLocked(); s != nil {
			var proof *provenConn
			if s == p.out {
				proof = p.outProof
			}
			if proven && proof != nil && !proof.checked() {
				p.mu.Unlock()
				if err := proof.wait(ctx); err != nil {
					if ctx.Err() != nil {
						return nil, nil, nil, fmt.Errorf("tunnel: no session to %s: %w", p.t.bind.peerName(p.pub), ctx.Err())
					}
					p.forget(s) // the dial loop redials at once
				}
				continue
			}
			p.opening++
			p.mu.Unlock()
			st, err := s.OpenStream()
			p.mu.Lock()
			p.opening--
			p.mu.Unlock()
			if err == nil {
				p.markBusy()
				return st, s, proof, nil
			}
			if !s.IsClosed() && !errors.Is(err, yamux.ErrRemoteGoAway) {
				return nil, nil, nil, fmt.Errorf("tunnel: open stream to %s: %w", p.t.bind.peerName(p.pub), err)
			}
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil { // wait for serve to notice and uninstall it
				return nil, nil, nil, fmt.Errorf("tunnel: open stream to %s: %w", p.t.bind.peerName(p.pub), err)
			}
			continue
		}
		ready := p.ready
		select {
		case <-ready: // a closed session not uninstalled yet
			p.mu.Unlock()
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return nil, nil, nil, fmt.Errorf("tunnel: open stream to %s: %w", p.t.bind.peerName(p.pub), err)
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
			return nil, nil, nil, err
		}
	}
}

// forget uninstalls sess, a session that closed, at once (serve does it
// too, a moment later): a stream opened again does not wait for serve.
func (p *peer) forget(sess *yamux.Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch sess {
	case p.out:
		p.out, p.outProof = nil, nil
	case p.in:
		p.in = nil
	default:
		return
	}
	if p.out == nil && p.in == nil {
		select {
		case <-p.ready:
			p.ready = make(chan struct{})
		default:
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
