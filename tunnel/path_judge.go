package tunnel

import "time"

// The judge of one peer's path: probe bookkeeping and the verdict
// (direct, gray, dead) that moves it between the direct path and the relay.
// Pure state: the probe loop judges a copy of a peer's probeRecord outside
// the bind's lock and publishes a move under it (see probeLoop).

// newPeerPath is a peer's record as of now: on the relay until probes
// confirm the direct path when probing (probing), else direct.
func newPeerPath(now time.Time, probing bool) *peerPath {
	p := &peerPath{probeRecord: probeRecord{changed: now, useRelay: probing}}
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
// the relay, and all of them answered brings it back to direct. A move is
// the caller's to publish.
func (p *probeRecord) judge(now time.Time) (moved bool, answered uint64) {
	sent := p.seq - p.base
	judged := min(sent-min(sent, 1), probeWindow)
	defer p.schedule(judged, now)
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
		return true, answered
	}
	return false, answered
}

// schedule sets the peer's probe interval: probeEvery while its
// newest judged probe was answered (or nothing is judged yet), doubled up
// to probeMaxEvery for each judgement that finds the newest two unanswered
// while the direct path is out of use, so a dead endpoint is probed at a
// bounded rate. A direct path that never answered since the peer became
// active, and has been silent for probeSilentAfter, is probed only every
// probeSilentEvery: an endpoint a peer advertises but does not answer at
// (a third party's address) gets two probes a minute.
func (p *probeRecord) schedule(judged uint64, now time.Time) {
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
			p.every, p.backedOff, p.silentSince = base, false, time.Time{}
			p.heard = true
			return
		}
	}
	if p.useRelay && judged >= probeDeadRun {
		if !p.backedOff {
			p.silentSince = now
		}
		p.every, p.backedOff = min(p.every*2, max(probeMaxEvery, base)), true
		if !p.heard && now.Sub(p.silentSince) >= probeSilentAfter {
			p.every = probeSilentEvery
		}
	}
}

// sameButAcks reports whether r equals o but for acks: a record judged as o
// (a copy) may take o's verdict and schedule as they stand, acks that
// arrived since being judged next time (as if they came after it).
func (r *probeRecord) sameButAcks(o *probeRecord) bool {
	a := *r
	a.acked = o.acked
	return a == *o
}
