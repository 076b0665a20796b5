package failover

import (
	"hash/fnv"
	"slices"
	"sync"
	"time"
)

// Warm sets and idle sessions (README "Performance", fleet scale). A node keeps a live tunnel
// session only with the peers its imports may pick next: for each import,
// the warm set. Every other member costs gossip only, and a session that
// carries no stream and serves no warm set is closed once it has been idle
// for a while (IdleSessions).

// DefaultWarmLimit caps one import's warm set: at most this many peers,
// taken alternately from the two most preferred sites that have a healthy
// endpoint, so that both sites are represented.
const DefaultWarmLimit = 6

// DefaultIdleTimeout is how long a session that carries no stream and is in
// no warm set is kept before it closes (tailscale's sessionActiveTimeout).
const DefaultIdleTimeout = 45 * time.Second

// WarmSet returns the nodes an import should hold a session with: the
// healthy endpoints of the two most preferred sites that have one, at most
// limit of them (limit <= 0 means DefaultWarmLimit). eps is the service's
// endpoints as for Order, where Down means not healthy by the catalog (the
// export's check fails or gossip does not have the node alive); data-path
// health is deliberately not an input, so that a site cut off only on the
// data path (a drill, a WAN cut) stays warm next to the site that takes its
// traffic, and failback finds its sessions up. Sites rank as in Order
// (listed sites first in their order, then nearest, then by name). A local
// endpoint makes its site count but needs no session and is never
// returned.
//
// Within a site, endpoints rank by a rendezvous hash of seed (the importing
// node's name) and the endpoint's node, so that importers spread their
// warm sessions over a large site instead of all picking the same few.
// The picks alternate between the two sites (first of the first site, first
// of the second, second of the first, ...) until limit is reached or both
// are exhausted. The result is sorted by node name; it is deterministic for
// identical inputs, and eps is not modified.
func WarmSet(eps []Endpoint, sites []string, limit int, seed string) []string {
	if limit <= 0 {
		limit = DefaultWarmLimit
	}
	var healthy []Endpoint
	for _, ep := range eps {
		if !ep.Down {
			healthy = append(healthy, ep)
		}
	}
	groups := groupSites(healthy, sites)
	if len(groups) > 2 {
		groups = groups[:2]
	}
	var picks [][]string
	for _, g := range groups {
		var remote []Endpoint
		for _, ep := range g.eps {
			if !ep.Local {
				remote = append(remote, ep)
			}
		}
		slices.SortFunc(remote, func(a, b Endpoint) int {
			ha, hb := rendezvous(seed, a.Node), rendezvous(seed, b.Node)
			switch {
			case ha < hb:
				return -1
			case ha > hb:
				return 1
			}
			return compareNode(a, b)
		})
		names := make([]string, len(remote))
		for i, ep := range remote {
			names[i] = ep.Node
		}
		picks = append(picks, names)
	}
	var out []string
	for i := 0; len(out) < limit; i++ {
		added := false
		for _, names := range picks {
			if i < len(names) && len(out) < limit {
				out = append(out, names[i])
				added = true
			}
		}
		if !added {
			break
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// rendezvous is the highest-random-weight hash of (seed, node).
func rendezvous(seed, node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(seed))
	h.Write([]byte{0})
	h.Write([]byte(node))
	return h.Sum64()
}

// IdleSessions decides when sessions that carry nothing close. It is keyed
// by peer and safe for concurrent use. A session is busy while it carries a
// stream or serves a warm set; Observe reports true once it has been
// observed not busy continuously for the timeout, and keeps reporting true
// until the session is busy again or forgotten. A session first observed
// idle starts its idle period at that observation.
type IdleSessions struct {
	timeout time.Duration // immutable

	mu    sync.Mutex
	since map[string]time.Time // guarded by mu; when the current idle period began
}

// NewIdleSessions returns an IdleSessions closing after timeout (<= 0:
// DefaultIdleTimeout).
func NewIdleSessions(timeout time.Duration) *IdleSessions {
	if timeout <= 0 {
		timeout = DefaultIdleTimeout
	}
	return &IdleSessions{timeout: timeout, since: make(map[string]time.Time)}
}

// Timeout returns the idle timeout.
func (s *IdleSessions) Timeout() time.Duration { return s.timeout }

// Observe records whether peer key's session is busy at now and reports
// whether it should be closed as idle. A clock that went backwards counts as
// no time elapsed.
func (s *IdleSessions) Observe(key string, busy bool, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if busy {
		delete(s.since, key)
		return false
	}
	t, ok := s.since[key]
	if !ok {
		s.since[key] = now
		return false
	}
	return now.Sub(t) >= s.timeout
}

// Forget drops peer key (its session closed, or the peer left): a new
// session starts with no idle time counted.
func (s *IdleSessions) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.since, key)
}

// Tracked returns how many sessions are in an idle period now.
func (s *IdleSessions) Tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.since)
}
