package failover

import (
	"context"
	"errors"
	"net"
	"time"
)

// Per-attempt deadlines of an import connection (README "Failover and drills"): a multiple of
// the peer's RTT with a floor and a ceiling, longer for last-resort
// candidates whose session may still be coming up, and for the second
// round (SecondRound).
const (
	AttemptFloor     = 750 * time.Millisecond
	AttemptCeiling   = 2 * time.Second
	AttemptRTTMult   = 10
	LastResortWindow = 3 * time.Second
)

// Candidate is what the importing node knows of one endpoint of a
// service when a connection asks for it. Endpoint carries the identity,
// weight, active count and RTT; its Down is ignored (Classify sets it).
// For a Local endpoint only Healthy counts.
type Candidate struct {
	Endpoint
	Healthy     bool // the exporter's backend check passes (catalog)
	Alive       bool // gossip sees the node alive
	Usable      bool // the peer may take new connections now: session and pings, hold-down after a recovery passed
	Reachable   bool // the peer answers pings now, hold-down aside
	BreakerOpen bool // the service/node circuit breaker is open
}

// Classify marks each candidate Down (a last resort) or not, in the
// order given. An endpoint is a last resort when its backend is
// unhealthy, its node is not alive or not usable, or its breaker is open.
// When that leaves no endpoint up, nothing is fully trusted (say, every
// peer in its failback hold-down after a flap): then the endpoints that
// answer now (healthy and reachable; a local one: healthy) are preferred
// over the silent ones, rather than falling back to site order alone.
func Classify(cs []Candidate) []Endpoint {
	out := make([]Endpoint, len(cs))
	allDown := true
	for i, c := range cs {
		out[i] = c.Endpoint
		if c.Local {
			out[i].Down = !c.Healthy
		} else {
			out[i].Down = !c.Healthy || !c.Alive || !c.Usable || c.BreakerOpen
		}
		allDown = allDown && out[i].Down
	}
	if allDown {
		for i, c := range cs {
			out[i].Down = !c.Healthy || !c.Local && !c.Reachable
		}
	}
	return out
}

// AttemptWindow is the deadline of one attempt at ep in the first round:
// LastResortWindow for a last resort, else AttemptRTTMult × its RTT
// within AttemptFloor..AttemptCeiling.
func AttemptWindow(ep Endpoint) time.Duration {
	if ep.Down {
		return LastResortWindow
	}
	return min(AttemptTimeout(ep.RTT, AttemptFloor, AttemptRTTMult), AttemptCeiling)
}

// SecondRoundWindow is the deadline of every attempt in the second round.
func SecondRoundWindow(Endpoint) time.Duration { return LastResortWindow }

// SecondRound reports whether a failed first round (Attempt's error)
// earns one more, longer round: when every attempt ran out of time and
// none was refused, this node or the network is more likely stalled (CPU
// starvation, a burst of loss) than every endpoint down. Not when the
// caller gave up, nor when there was nothing to try.
func SecondRound(err error) bool {
	var all *AllFailedError
	if !errors.As(err, &all) || all.Err != nil || len(all.Failures) == 0 {
		return false
	}
	for _, f := range all.Failures {
		var ne net.Error
		if !errors.Is(f.Err, context.DeadlineExceeded) && !(errors.As(f.Err, &ne) && ne.Timeout()) {
			return false
		}
	}
	return true
}
