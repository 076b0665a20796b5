package gossip

// Stats are gossip counters and gauges for metrics. Reading them takes no
// lock that the gossip or data path waits on for long.
type Stats struct {
	Members     int    // alive members memberlist knows, this node included
	HealthScore int    // memberlist's awareness score: 0 is healthy, higher means this node is slow to answer probes
	Queued      int    // catalog broadcasts waiting to be gossiped
	Malformed   uint64 // malformed catalog messages and states received and ignored
}

// Stats returns the current gossip stats.
func (g *Gossip) Stats() Stats {
	return Stats{
		Members:     g.ml.NumMembers(),
		HealthScore: g.ml.GetHealthScore(),
		Queued:      g.queue.NumQueued(),
		Malformed:   g.malformed.Load(),
	}
}
