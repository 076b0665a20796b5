package gossip

import (
	"math/rand/v2"
	"net/netip"
	"time"
)

// Catch-up syncs: a few extra push/pull exchanges with random alive
// members right after a change that others' broadcasts may not have
// carried to this node (or this node's to them), instead of waiting for
// memberlist's periodic push/pull, which at 100 members comes every 30 s
// (PushPullInterval scaled by memberlist with the member count) and, for
// a node that has just started, after a random stagger of up to 10 s
// more.
//
// Why (README "Performance", fleet scale; measured with debug logs of
// `meshd bench --only scale --nodes 100`):
//   - A node that joins learns the members from its seed's push/pull
//     state, and memberlist takes only the alive ones from it: a member
//     the seed holds suspect at that moment (suspected while 100 processes
//     start on two cores, refuted since, but the refutation not yet or
//     never heard by the seed) is dropped, and its refutation has usually
//     spread and ended before the joiner was there to hear it. n090 missed
//     n074 so for 34 s, until its first periodic push/pull; five other
//     late joiners for 8-11 s.
//   - After a partition heals, the members that come back are announced
//     by their refutations, broadcasts that a busy node (an exporter with
//     50 sessions) can miss: n003 saw three members of the other half
//     only through a push/pull 6.8 s after the heal, when every other
//     node had seen them within 4 s.
//
// So a sync is due 2 s after this node's join and after a member this
// node held dead comes back (the others have had time to hear the
// refutations by then), then every 4 s while such changes keep coming,
// and none once they stop for 6 s: an idle, converged node does no extra
// work, and a node that keeps seeing members come back (one that keeps
// failing and returning) syncs at most catchUpBudget times per
// catchUpWindow, a few times memberlist's own rate. New members alone do
// not count: at a fleet's start-up every node sees all the others join.
const (
	catchUpFirst  = 2 * time.Second  // trigger → first sync
	catchUpGap    = 4 * time.Second  // between syncs
	catchUpSpan   = 6 * time.Second  // no sync later than this after the last trigger
	catchUpBudget = 4                // at most this many syncs…
	catchUpWindow = 60 * time.Second // …in any window this long
)

// catchUp decides when the next catch-up sync is due. It is not safe for
// concurrent use (catchUpLoop owns it); decisions take now.
type catchUp struct {
	due    time.Time   // next sync; zero: none planned
	until  time.Time   // no sync after this
	recent []time.Time // the last catchUpBudget syncs, oldest first
}

// trigger records a change at now: a sync is planned catchUpFirst later
// unless one is planned already, and syncs may follow until catchUpSpan
// after now.
func (c *catchUp) trigger(now time.Time) {
	if u := now.Add(catchUpSpan); u.After(c.until) {
		c.until = u
	}
	if c.due.IsZero() {
		c.due = now.Add(catchUpFirst)
	}
}

// step reports whether a sync should run at now; if not, how long until
// one may be due (0: none is planned).
func (c *catchUp) step(now time.Time) (sync bool, wait time.Duration) {
	if c.due.IsZero() {
		return false, 0
	}
	at := c.due
	if len(c.recent) >= catchUpBudget {
		if free := c.recent[0].Add(catchUpWindow); free.After(at) {
			at = free
		}
	}
	if at.After(c.until) {
		c.due = time.Time{} // the changes stopped before the budget allowed one
		return false, 0
	}
	if now.Before(at) {
		return false, at.Sub(now)
	}
	return true, 0
}

// synced records a sync run at now and plans the next one.
func (c *catchUp) synced(now time.Time) {
	c.recent = append(c.recent, now)
	if len(c.recent) > catchUpBudget {
		c.recent = c.recent[len(c.recent)-catchUpBudget:]
	}
	c.due = now.Add(catchUpGap)
	if c.due.After(c.until) {
		c.due = time.Time{}
	}
}

// syncKick is a change for catchUpLoop: when, and a member whose state
// this node has just taken (the join's seed), not to be the first sync's.
type syncKick struct {
	at    time.Time
	avoid netip.AddrPort
}

// kickCatchUp asks catchUpLoop for catch-up syncs (a change: see above).
func (g *Gossip) kickCatchUp(avoid netip.AddrPort) {
	k := syncKick{at: time.Now(), avoid: avoid}
	select {
	case g.catchKick <- k:
		return
	default:
	}
	// One is pending: a kick carrying a seed replaces it (joins are rare),
	// any other is covered by the pending one.
	if avoid.IsValid() {
		select {
		case <-g.catchKick:
		default:
		}
		select {
		case g.catchKick <- k:
		default:
		}
	}
}

// catchUpLoop runs the catch-up syncs. Idle (nothing planned) it waits on
// its channel alone: no timer.
func (g *Gossip) catchUpLoop() {
	defer g.wg.Done()
	var c catchUp
	var last netip.AddrPort // the previous sync's member, or the join's seed
	var timer *time.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-g.done:
			return
		case k := <-g.catchKick:
			c.trigger(k.at)
			if k.avoid.IsValid() {
				last = k.avoid
			}
		case <-fire:
		}
		fire = nil
		now := time.Now()
		sync, wait := c.step(now)
		if sync {
			if a, ok := g.catchUpPeer(last); ok {
				n, err := g.ml.Join([]string{a.String()}) // a push/pull exchange with a
				g.log.Debug("gossip: catch-up sync", "addr", a.String(), "ok", n > 0, "err", err)
				last = a
			}
			now = time.Now()
			c.synced(now)
			_, wait = c.step(now)
		}
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			fire = timer.C
		}
	}
}

// catchUpPeer picks a random alive member other than avoid (a second
// opinion: the last sync's member, or the seed, already gave its state),
// or avoid itself when it is the only one.
func (g *Gossip) catchUpPeer(avoid netip.AddrPort) (netip.AddrPort, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.leaving {
		return netip.AddrPort{}, false // a push/pull now would only repeat the goodbye
	}
	var pick netip.AddrPort
	n := 0
	for _, p := range g.peers {
		if p.state != StateAlive || !p.addr.IsValid() || p.addr == avoid {
			continue
		}
		n++
		if rand.IntN(n) == 0 { // reservoir sampling: each equally likely
			pick = p.addr
		}
	}
	if n == 0 {
		return avoid, avoid.IsValid() && g.aliveAtLocked(avoid)
	}
	return pick, true
}

// aliveAtLocked reports whether an alive member has gossip address a.
func (g *Gossip) aliveAtLocked(a netip.AddrPort) bool {
	for _, p := range g.peers {
		if p.addr == a && p.state == StateAlive {
			return true
		}
	}
	return false
}
