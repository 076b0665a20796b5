package gossip

// Stats are gossip counters and gauges for metrics. Reading them takes no
// lock that the gossip or data path waits on for long.
type Stats struct {
	Members     int    // alive members memberlist knows, this node included
	HealthScore int    // memberlist's awareness score: 0 is healthy, higher means this node is slow to answer probes
	Queued      int    // catalog broadcasts waiting to be gossiped
	Malformed   uint64 // malformed catalog messages and states received and ignored
	// Polls counts memberlist's asks for broadcasts to send: one per gossip
	// round and one per UDP message it sends (the Pacer's beats). An idle
	// node polls only for its probes and its answers to others'.
	Polls uint64
	// BytesSent and BytesReceived count gossip on the wire (UDP and TCP,
	// encrypted; without IP and transport headers).
	BytesSent, BytesReceived uint64
	// Refused unauthenticated input (guard.go): TCP streams closed at
	// accept or before memberlist read them (caps, size, deadline), UDP
	// packets dropped as unreadable.
	StreamsRefused, PacketsDropped uint64
}

// Stats returns the current gossip stats.
func (g *Gossip) Stats() Stats {
	return Stats{
		Members:       g.ml.NumMembers(),
		HealthScore:   g.ml.GetHealthScore(),
		Queued:        g.queue.NumQueued(),
		Malformed:     g.malformed.Load(),
		Polls:         g.polls.Load(),
		BytesSent:     g.count.sent.Load(),
		BytesReceived: g.count.recv.Load(),

		StreamsRefused: g.guard.stats.StreamsRefused.Load(),
		PacketsDropped: g.guard.stats.PacketsDropped.Load(),
	}
}
