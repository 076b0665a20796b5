package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// The probe loop: every probeEvery it judges each active peer that is due
// (probeRecord.judge) and sends it its next ping. A round takes
// PathBind.mu twice, briefly: to copy the due peers' records (takeDue) and
// to apply the verdicts and number the probes (applyDue). Judging, logging
// (which names peers through the namer) and sending run without it.

// judgement is one due peer's turn in a probe round.
type judgement struct {
	pub key.PublicKey
	p   *peerPath
	in  probeRecord // the peer's record as copied under the lock
	out probeRecord // in, judged outside it

	moved    bool
	answered uint64
	toRelay  bool   // where it moved: to the relay, else to direct
	relayBy  string // the relay's name when it moved
}

// probeOut is a ping to send.
type probeOut struct {
	to         netip.AddrPort
	pub        key.PublicKey
	seq, stamp uint64
}

// probeLoop pings every peer's direct address and re-judges its path.
// Rounds are at least probeEvery apart; the loop sleeps until the first
// peer is due (an idle peer is probed every probeIdleEvery: five wakeups
// a second for nothing were an idle node's largest cost after gossip), or
// until a peer turns active or busy (kick).
func (b *PathBind) probeLoop(c *net.UDPConn, done chan struct{}) {
	defer b.wg.Done()
	tick := b.pacer.NewTimer(probeEvery)
	defer tick.Stop()
	var sends []probeOut
	var due []judgement
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		case <-b.kick: // the timer is Reset after the round
		}
		now := time.Now()
		due = b.takeDue(now, due[:0])
		judgeAll(due, now)
		sends = b.applyDue(now, due, sends[:0])
		for i := range due {
			j := &due[i]
			b.logMove(j)
			if j.moved && !j.toRelay {
				// A new peer's first WireGuard initiation went by the relay,
				// which drops it when the peer's own relay client is not
				// connected yet (both just started): sent again on the
				// direct path just confirmed if still unanswered, rather
				// than at WireGuard's retry 5 s after it.
				b.resendInitiation(j.p, j.pub)
			}
		}
		clear(due) // keeps no peer past its round
		for _, s := range sends {
			c.WriteToUDPAddrPort(b.probe(probePing, s.pub, s.seq, s.stamp), s.to)
		}
		if d, idle := b.untilDue(time.Now()); idle {
			tick.ResetLoose(d) // the first due is an idle peer: its probe rides the beat however soon
		} else {
			tick.Reset(d)
		}
	}
}

// untilDue is how long the probe loop may sleep at now: until the first
// active peer is due, at least probeEvery, at most probeMaxEvery; idle
// when every active peer is unhurried (the wait may ride the beat).
func (b *PathBind) untilDue(now time.Time) (d time.Duration, idle bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, idle = probeMaxEvery, true
	for _, p := range b.active {
		d = min(d, p.next.Sub(now))
		idle = idle && p.unhurried()
	}
	return max(d, probeEvery), idle
}

// kickLoop wakes the probe loop for a round now (a peer turned active or
// busy and is due at once).
func (b *PathBind) kickLoop() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// takeDue appends the active peers due for a probe at now, each with a
// copy of its record.
func (b *PathBind) takeDue(now time.Time, due []judgement) []judgement {
	b.mu.Lock()
	defer b.mu.Unlock()
	for pub, p := range b.active {
		if !now.Before(p.next) {
			due = append(due, judgement{pub: pub, p: p, in: p.probeRecord})
		}
	}
	return due
}

// judgeAll judges each copied record; it takes no lock.
func judgeAll(due []judgement, now time.Time) {
	for i := range due {
		j := &due[i]
		j.out = j.in
		j.moved, j.answered = j.out.judge(now)
	}
}

// applyDue applies each judgement to its peer, publishes moves, and
// appends the peer's next probe to sends. The result is that of a round
// run under the lock at once: a peer removed or made inactive meanwhile
// is skipped (as if that came first), one whose record changed meanwhile
// other than by acks (SetActive, SetBusy) is judged again here (as if the
// change came first), and acks that came meanwhile are kept for the next
// round (as if they came after).
func (b *PathBind) applyDue(now time.Time, due []judgement, sends []probeOut) []probeOut {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range due {
		j := &due[i]
		p := j.p
		if b.active[j.pub] != p {
			j.moved = false
			continue
		}
		if p.sameButAcks(&j.in) {
			acked := p.acked
			p.probeRecord = j.out
			p.acked = acked
		} else {
			j.moved, j.answered = p.judge(now)
		}
		if j.moved {
			p.publish()
			j.toRelay, j.relayBy = p.useRelay, b.relayName()
		}
		if !p.direct.IsValid() || b.blocked(j.pub) {
			continue
		}
		p.next = now.Add(p.every - probeEvery/4) // due at the tick nearest every
		if p.heardRecently(now) {
			continue // its pings speak for it (SetPassive)
		}
		st := b.stamp.Add(1)
		sends = append(sends, probeOut{p.direct, j.pub, p.startProbe(st), st})
		p.pings.Add(1)
	}
	return sends
}

// logMove logs a peer's move between relay and direct (see
// probeRecord.judge), if it moved, and at debug level a change of its
// probe interval (backoff, its end, the idle rate): a few lines per
// change of the path's state, never one per probe.
func (b *PathBind) logMove(j *judgement) {
	if j.out.every != j.in.every && b.log.Enabled(context.Background(), slog.LevelDebug) {
		b.log.Debug("path: probe interval", "peer", b.peerName(j.pub), "every", j.out.every,
			"relay", j.out.useRelay, "answered", j.answered, "sent", j.out.seq-j.out.base, "idle", j.out.idle)
	}
	switch {
	case !j.moved:
	case !j.toRelay:
		b.log.Info("path: direct path confirmed", "peer", b.peerName(j.pub))
	case j.relayBy == "":
		b.log.Warn("path: direct path lost or lossy; no relay to fall back to", "peer", b.peerName(j.pub),
			"answered", fmt.Sprintf("%d/%d", j.answered, probeWindow))
	default:
		b.log.Warn("path: direct path lost or lossy; using the relay", "peer", b.peerName(j.pub),
			"answered", fmt.Sprintf("%d/%d", j.answered, probeWindow), "relay", j.relayBy)
	}
}
