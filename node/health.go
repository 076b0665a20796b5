package node

import (
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/gossip"
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

// watchHealth observes every peer's reachability each healthTick and logs
// the transitions of its usability for endpoint selection.
func (n *Node) watchHealth() {
	tick := time.NewTicker(healthTick)
	defer tick.Stop()
	everUp := make(map[string]bool) // owned by this goroutine
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		c := n.catalog.Load()
		for _, m := range c.members {
			st, _ := n.tun.SessionStats(m.Meta.PublicKey)
			if st.SessionUp {
				everUp[m.Name] = true
			}
			if !everUp[m.Name] {
				continue // a new peer is judged once its first session is up
			}
			switch n.health.Observe(m.Name, peerReachable(m, st, now), now) {
			case failover.TransitionDown:
				n.log.Warn("peer down: new connections avoid it", "peer", m.Name, "site", m.Meta.Site,
					"state", m.State.String(), "session", st.SessionUp)
				n.metrics.PeerTransition(m.Name, m.Meta.Site, "down")
			case failover.TransitionUp:
				n.log.Info("peer up again: new connections may use it", "peer", m.Name, "site", m.Meta.Site)
				n.metrics.PeerTransition(m.Name, m.Meta.Site, "up")
			}
		}
		for name := range everUp {
			if _, ok := c.byName[name]; !ok {
				delete(everUp, name)
				n.health.Forget(name)
			}
		}
	}
}

// peerReachable: session up and pings answered, and not gone by gossip.
// Gossip's "dead" is believed unless the data path just proved otherwise
// (a pong within deadOverride): after a partition heals, memberlist
// spreads stale "dead" verdicts for a moment, and the node refutes them.
func peerReachable(m gossip.Member, st tunnel.PeerStats, now time.Time) bool {
	if m.State == gossip.StateLeft || !st.SessionUp {
		return false
	}
	if failover.Silent(st.LastPong, st.PingPending, st.SRTT, silentFloor, silentMult, now) {
		return false
	}
	if m.State == gossip.StateDead {
		return !st.LastPong.IsZero() && now.Sub(st.LastPong) < deadOverride
	}
	return true
}

// deadOverride is how fresh a pong must be to outweigh gossip's "dead".
const deadOverride = 500 * time.Millisecond

// peerUsable tells whether new connections may go to member m now.
func (n *Node) peerUsable(m gossip.Member, st tunnel.PeerStats, now time.Time) bool {
	return m.State != gossip.StateLeft && st.SessionUp && n.health.Usable(m.Name, now)
}
