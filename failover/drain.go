package failover

import "time"

// DrainPropagation is how long a draining node's withdrawal of its
// exports is given to reach the other nodes by gossip before the node
// stops answering at all.
const DrainPropagation = 500 * time.Millisecond

// Drain is what a draining node knows when it decides whether to stop
// waiting (node.Close; README "Configuration reference" failover.drain_grace).
type Drain struct {
	Active    int64         // connections still open (served streams and import clients)
	Elapsed   time.Duration // since the drain began
	Grace     time.Duration // failover.drain_grace
	Withdrew  bool          // the drain withdrew exports from the catalog
	LivePeers func() bool   // whether another node may still send streams; called only when it matters
}

// Over reports whether the drain is over: the grace has passed, or no
// connection is open and nobody can still be sent here, because nothing
// was withdrawn, the withdrawal has had DrainPropagation to spread, or no
// other node is alive.
func (d Drain) Over() bool {
	if d.Elapsed >= d.Grace {
		return true
	}
	return d.Active == 0 && (!d.Withdrew || d.Elapsed >= DrainPropagation || d.LivePeers == nil || !d.LivePeers())
}
