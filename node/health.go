package node

import (
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/tunnel"
)

// Data-path liveness: sessions are pinged every 200 ms (tunnel), and a peer
// whose outstanding ping is older than max(silentFloor, silentMult×SRTT)
// is marked down for endpoint selection at once, without waiting for
// gossip. Established streams are not touched: they ride out the stall
// until the session timeout.
const (
	healthTick  = 100 * time.Millisecond
	silentFloor = 600 * time.Millisecond
	silentMult  = 4
)

// Health passes: the peers due are judged, at most every healthTick. A peer whose
// session carries no stream, with no ping outstanding and reachable, is
// due again healthIdleEvery later: its pings go out every second (tunnel's
// IdlePingInterval), so judging it ten times a second found nothing new,
// and an exporter that many importers keep warm paid for each of them.
// The set of sessions is re-read every healthRescan.
const (
	healthIdleEvery = 500 * time.Millisecond
	healthRescan    = 500 * time.Millisecond
)

// watchHealth observes the reachability of the peers this node holds or
// needs a session with, and logs the transitions of their usability for
// endpoint selection. Peers without a session are judged by gossip alone
// and cost nothing here (README "Performance", fleet scale).
func (n *Node) watchHealth() {
	tick := n.pacer.NewTimer(0) // quiet peers' passes ride the beat; busy ones' are plain timers
	defer tick.Stop()
	type judged struct {
		pub   key.PublicKey
		next  time.Time // when it is due to be judged again
		hurry bool      // next is a healthTick away (streams, a ping outstanding, unreachable)
	}
	tracked := make(map[string]*judged) // owned by this goroutine: peers whose session has been up
	var rescan time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		c := n.catalog.Load()
		if !now.Before(rescan) {
			rescan = now.Add(healthRescan)
			for _, si := range n.tun.Sessions() {
				if name, ok := c.byKey[si.PublicKey]; ok {
					if j := tracked[name]; j == nil || j.pub != si.PublicKey {
						tracked[name] = &judged{pub: si.PublicKey} // a new peer is judged once its first session is up
					}
				}
			}
		}
		wake := rescan // the next pass: the rescan, or the first peer due before it
		hurry := false // some peer is due at healthTick: a plain timer, not the beat
		for name, j := range tracked {
			m, ok := c.byName[name]
			if !ok || m.Meta.PublicKey != j.pub {
				delete(tracked, name)
				n.health.Forget(name)
				continue
			}
			if now.Before(j.next) {
				wake = minTime(wake, j.next)
				hurry = hurry || j.hurry
				continue
			}
			st, _ := n.tun.SessionStats(j.pub)
			if st.Session == tunnel.SessionStateIdle {
				// Closed as idle, or broken with nobody needing it: from
				// now on gossip speaks for it, and the next session starts
				// afresh.
				delete(tracked, name)
				n.health.Forget(name)
				continue
			}
			reachable := peerReachable(m, st, now)
			due := healthDue(st, reachable)
			j.next, j.hurry = now.Add(due), due < healthIdleEvery
			wake = minTime(wake, j.next)
			hurry = hurry || j.hurry
			switch n.health.Observe(m.Name, reachable, now) {
			case failover.TransitionDown:
				n.log.Warn("peer down: new connections avoid it", "peer", m.Name, "site", m.Meta.Site,
					"state", m.State.String(), "session", st.Session)
				n.metrics.PeerTransition(m.Name, m.Meta.Site, "down")
			case failover.TransitionUp:
				n.log.Info("peer up again: new connections may use it", "peer", m.Name, "site", m.Meta.Site)
				n.metrics.PeerTransition(m.Name, m.Meta.Site, "up")
			}
		}
		if hurry {
			tick.Reset(max(time.Until(wake), time.Millisecond))
		} else {
			// Only quiet peers and the rescan: however soon the first is
			// due, its look came from an unhurried interval and rides the
			// beat (with peers at different phases the rest of the wait is
			// often short, and would otherwise be a wakeup of its own).
			tick.ResetLoose(max(time.Until(wake), time.Millisecond))
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// healthDue is how long after an observation a peer is judged again: at
// every tick while its session carries streams, a ping is outstanding or
// it is unreachable; healthIdleEvery otherwise.
func healthDue(st tunnel.PeerStats, reachable bool) time.Duration {
	if st.Streams > 0 || !st.PingPending.IsZero() || !reachable {
		return healthTick
	}
	return healthIdleEvery
}

// peerReachable: with a session, the session is up and its pings are
// answered, and the peer is not gone by gossip; gossip's "dead" is
// believed unless the data path just proved otherwise (a pong within
// deadOverride): after a partition heals, memberlist spreads stale "dead"
// verdicts for a moment, and the node refutes them. Without a session
// (idle: opened on demand), gossip's "alive" alone. A session that is
// needed but not up (down) is not reachable.
func peerReachable(m gossip.Member, st tunnel.PeerStats, now time.Time) bool {
	if m.State == gossip.StateLeft {
		return false
	}
	switch st.Session {
	case tunnel.SessionStateIdle:
		return m.State == gossip.StateAlive
	case tunnel.SessionStateUp:
	default:
		return false
	}
	if !st.SessionUp || failover.Silent(st.LastPong, st.PingPending, st.SRTT, silentFloor, silentMult, now) {
		return false
	}
	if m.State == gossip.StateDead {
		return !st.LastPong.IsZero() && now.Sub(st.LastPong) < deadOverride
	}
	return true
}

// deadOverride is how fresh a pong must be to outweigh gossip's "dead".
const deadOverride = 500 * time.Millisecond

// peerUsable tells whether new connections may go to member m now: a peer
// with a session by its health (pings, hold-down after a recovery), one
// without by gossip. So is one whose first session is being dialled (a
// peer that just joined a warm set, or opened on demand): health has not
// judged it yet, and a connection to it waits the few milliseconds its
// session takes. Judged down until then, a warm candidate listed in an
// import's sites lost to an unlisted site during a drill that began right
// after the warm set changed (the scale bench's drill phase).
func (n *Node) peerUsable(m gossip.Member, st tunnel.PeerStats, now time.Time) bool {
	if m.State == gossip.StateLeft {
		return false
	}
	switch {
	case st.Session == tunnel.SessionStateIdle,
		st.Session == tunnel.SessionStateDown && !n.health.Observed(m.Name):
		return m.State == gossip.StateAlive && n.health.Usable(m.Name, now)
	}
	return st.SessionUp && n.health.Usable(m.Name, now)
}
