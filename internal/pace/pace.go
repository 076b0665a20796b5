// Package pace lines up a process's periodic, unhurried wakeups on one
// beat.
//
// On an idle node a timer's wakeup costs far more than the work it does: a
// thread woken from epoll, the scheduler looking for work, another thread
// started and parked again, the runtime's monitor spinning after a
// syscall. Two goroutines that wake five times a second at the same instant
// cost what one does; apart they cost twice as much (measured: 0.7 vs
// 1.6 ms of CPU a second). So the node's idle loops (health passes over
// quiet peers, idle sessions' pings and path probes, gossip upkeep) do not
// each keep a timer: they wait on a Pacer, which wakes them at a beat, and
// the beat is a wakeup the process has anyway (memberlist sending a UDP
// message: its probe of a member every 2 s, an answer to another's
// probe, a gossip round; see gossip.Config.Pacer).
//
// A paced timer fires at the first beat at or after its deadline: never
// early, at most one beat interval late while beats come, and at most a
// backstop later when they stop (a node alone sends nothing). Timers
// shorter than the Pacer's plain threshold are plain timers, unless armed
// with ResetLoose: a busy peer's 100 ms passes keep their precision, and a
// busy node is awake anyway.
package pace

import (
	"sync"
	"time"
)

// A Pacer wakes the timers made from it at its beats. The zero value is
// not usable; a nil *Pacer makes plain timers.
type Pacer struct {
	every time.Duration // the longest expected time between beats
	plain time.Duration // timers shorter than this are plain

	mu       sync.Mutex
	armed    map[*Timer]struct{}
	backstop *time.Timer // at the earliest deadline + every, for beats that stop
	earliest time.Time   // of the armed timers; zero: none
}

// New returns a Pacer whose beats come at least every: a timer fires at
// most every after its deadline while beats come, 1.5×every without.
// Timers shorter than plain are plain timers.
func New(every, plain time.Duration) *Pacer {
	p := &Pacer{every: every, plain: plain, armed: make(map[*Timer]struct{})}
	p.backstop = time.AfterFunc(time.Hour, func() { p.Beat(time.Now()) })
	p.backstop.Stop()
	return p
}

// Beat wakes every timer due at now. Call it from a wakeup that happens
// anyway (more than once per tick is harmless); it does not block and
// takes a lock briefly.
func (p *Pacer) Beat(now time.Time) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.earliest.IsZero() || now.Before(p.earliest) {
		p.rearmLocked(now)
		return
	}
	var earliest time.Time
	for t := range p.armed {
		if !now.Before(t.deadline) {
			delete(p.armed, t)
			t.fire()
			continue
		}
		if earliest.IsZero() || t.deadline.Before(earliest) {
			earliest = t.deadline
		}
	}
	p.earliest = earliest
	p.rearmLocked(now)
}

// rearmLocked sets the backstop one interval (two when beats have
// stopped) after the earliest armed deadline.
func (p *Pacer) rearmLocked(now time.Time) {
	if p.earliest.IsZero() {
		p.backstop.Stop()
		return
	}
	p.backstop.Reset(max(p.earliest.Add(p.every+p.every/2).Sub(now), time.Millisecond))
}

// Timer is a timer that fires at a beat (or a plain one: see New); its channel C receives once per
// arming, as a time.Timer's does (with Go 1.23 semantics: Reset and Stop
// discard a value not yet received).
type Timer struct {
	C <-chan time.Time

	c        chan time.Time
	p        *Pacer
	plain    *time.Timer // for durations under two beats, or a nil Pacer
	deadline time.Time   // while armed on p

	// A plain timer's callback may run concurrently with Stop: it sends
	// only for the arming it was set for, under mu, so that nothing of an
	// earlier arming arrives after Stop or Reset returns.
	mu       sync.Mutex
	gen      uint64 // guarded by mu; counts armings and stops
	plainGen uint64 // guarded by mu; the arming the plain timer is set for
}

// NewTimer returns a timer armed to fire d from now.
func (p *Pacer) NewTimer(d time.Duration) *Timer {
	c := make(chan time.Time, 1)
	t := &Timer{C: c, c: c, p: p}
	t.Reset(d)
	return t
}

// fire sends the time without blocking; the caller holds p.mu (paced) or
// t.mu (plain).
func (t *Timer) fire() {
	select {
	case t.c <- time.Now():
	default:
	}
}

// Reset re-arms t to fire d from now, discarding a firing not yet
// received: at a beat if d is at least the Pacer's plain threshold, as a
// plain timer if shorter.
func (t *Timer) Reset(d time.Duration) { t.reset(d, t.p == nil || d < t.p.plain) }

// ResetLoose re-arms t to fire at the first beat at or after d from now,
// however short d is: for the rest of an unhurried wait (a loop that
// serves several peers sleeps until the first is due, and that one's
// next look came from a long interval), which would otherwise become a
// plain timer and a wakeup of its own. A nil Pacer makes it plain.
func (t *Timer) ResetLoose(d time.Duration) { t.reset(d, t.p == nil) }

func (t *Timer) reset(d time.Duration, plain bool) {
	t.Stop()
	if plain {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.gen++
		t.plainGen = t.gen
		if t.plain == nil {
			t.plain = time.AfterFunc(d, t.firePlain)
		} else {
			t.plain.Reset(d)
		}
		return
	}
	now := time.Now()
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	t.deadline = now.Add(d)
	p.armed[t] = struct{}{}
	if p.earliest.IsZero() || t.deadline.Before(p.earliest) {
		p.earliest = t.deadline
		p.rearmLocked(now)
	}
}

// firePlain is the plain timer's callback.
func (t *Timer) firePlain() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gen == t.plainGen {
		t.fire()
	}
}

// Stop disarms t and discards a firing not yet received.
func (t *Timer) Stop() {
	t.mu.Lock()
	t.gen++
	if t.plain != nil {
		t.plain.Stop()
	}
	t.mu.Unlock()
	if t.p != nil {
		t.p.mu.Lock()
		delete(t.p.armed, t)
		t.p.mu.Unlock()
	}
	select {
	case <-t.c:
	default:
	}
}
