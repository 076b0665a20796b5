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

// answered records the answer to probe seq at now (see ack) and reports
// whether the probe loop should judge the peer at once: its path is on
// the relay and probed slowly (backed off, or idle before its first
// verdict), so that the answer brings probeEvery now rather than one slow
// interval later (a direct path that came back after a cut was seen only
// at the second backed-off probe after it: up to 2×probeMaxEvery, and
// ~9 s to direct). One answer per probe sent: a peer cannot make the loop
// run faster than it probes. Call it holding PathBind.mu.
func (p *peerPath) answered(seq uint64, now time.Time) (judgeNow bool) {
	p.ack(seq)
	if !p.active || !p.useRelay || p.every <= probeEvery {
		return false
	}
	p.next = now
	return true
}

// judge moves the peer between relay and direct by its probe record and
// reschedules its probes; it reports whether the path moved and how many
// judged probes were answered. A new peer starts on the relay (when there
// is one) and moves to direct once its newest probeFirstVerdict judged
// probes are all answered, so the first handshake never waits on a path
// that may not exist. Later, of the last probeWindow probes (the newest, still in
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
		// A path that was direct before comes back once a full window is
		// answered. A new peer needs only its newest probeFirstVerdict: its
		// earliest probes may have gone out before the peer knew this node
		// (a dialling node probes as soon as it learns of the peer, which
		// may learn of it a moment later, and drops probes from a stranger),
		// and those must not hold it on the relay for a window.
		need, of := uint64(probeComeBack), judged
		if !p.everDirect {
			need, of = probeFirstVerdict, min(judged, probeFirstVerdict)
		}
		if judged >= need && p.answeredOf(of) == of {
			p.useRelay, p.everDirect, p.changed = false, true, now
			// Direct is judged from the probes that confirmed it on: the
			// ones lost before (a new peer's) do not count against it.
			p.base = max(p.base, p.seq-of-1)
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
//
// An idle session's peer (SetBusy) is probed every probeIdleEvery while its
// path is direct. On the relay it is probed every probeEvery, busy or not,
// while its direct path answers (or before its first verdict), until
// direct is confirmed: three answers at the idle rate, each riding the
// beat, took up to ~15 s, and the node that did not dial showed `relay` all
// that time. This costs nothing lasting for a peer that stays on the
// relay: unanswered probes back off as before (doubling up to
// probeMaxEvery, and probeSilentEvery after probeSilentAfter), so a peer
// behind a UDP-blocking firewall gets a few more probes in its first
// seconds after becoming active (200, 200, 200, 400, 800, 1600 ms apart,
// then probeMaxEvery, where the idle rate gave probeIdleEvery and then
// probeMaxEvery) and the same two a minute after its first minute
// (TestProbeIdleRelayCost).
func (p *probeRecord) schedule(judged uint64, now time.Time) {
	base := probeEvery
	if p.idle && !p.useRelay {
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
		p.every, p.backedOff = min(p.every*2, probeMaxEvery), true
		if !p.heard && now.Sub(p.silentSince) >= probeSilentAfter {
			p.every = probeSilentEvery
		}
	}
}

// unhurried reports whether the peer's next probe may ride the pacer's
// beat (see probeLoop): its session is idle and its interval is the idle
// one or longer; not while a path on the relay is being confirmed or
// backs off from probeEvery.
func (p *probeRecord) unhurried() bool {
	return p.idle && p.every >= probeIdleEvery
}

// answeredOf counts how many of the newest k judged probes (the one in
// flight is not judged) were answered.
func (p *probeRecord) answeredOf(k uint64) (n uint64) {
	for i := uint64(1); i <= k; i++ {
		s := p.seq - i
		if j := s % probeRing; s > p.base && p.sent[j] == s && p.acked[j] {
			n++
		}
	}
	return n
}

// sameButAcks reports whether r equals o but for acks: a record judged as o
// (a copy) may take o's verdict and schedule as they stand, acks that
// arrived since being judged next time (as if they came after it).
func (r *probeRecord) sameButAcks(o *probeRecord) bool {
	a := *r
	a.acked = o.acked
	return a == *o
}
