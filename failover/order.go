// Package failover orders the candidate endpoints of an import and runs the
// attempt loop that tries them in turn until one works (README "Configuration reference" imports,
// §4 Selection and Failover).
//
// It is pure logic on plain data: the caller (package node) builds an
// []Endpoint from the catalog, peer health and measured RTTs, calls Order to
// rank them, and hands the result to Attempt together with a dial function.
// Nothing here touches the network, reads a clock (but through an injected
// Clock) or keeps package-level state, so several nodes can share it in
// one process and every decision is reproducible from its inputs.
//
// Around that loop it holds the rest of the failover decisions, equally
// pure: every time-dependent call takes now as an argument.
//   - Classify: which candidates are last resorts (Candidate, what the node
//     knows of each endpoint), with the all-down fallback; AttemptWindow and
//     SecondRound: the attempt deadlines and the longer second round.
//   - Breaker: a circuit breaker per endpoint key with doubling cooldowns
//     and a single half-open trial.
//   - Health and Silent: peer usability from ping timing, with a hold-down
//     before failback to a peer that was down.
//   - DrillOrder, Blackhole: authenticated failover-drill orders (docs/formats.md)
//     and the receiving node's cut-off state.
//   - DrillRun: the drill sequence run by the ordering node (baseline,
//     cut, probes every 100 ms, failback wait) on an injected Clock, with
//     the node's effects (send the order, probe an import) as functions;
//     Summarize and Report: its report.
//   - RelayChooser: which relay a node connects to, and its backoff.
//   - Drain: when a draining node may stop waiting for its connections.
//   - WarmSet and IdleSessions: which peers an import keeps a session
//     with, and when a session that carries nothing closes (README "Performance", fleet scale).
package failover

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"
)

// Balance selects how endpoints within one site are ordered.
type Balance string

const (
	// BalanceLeastConn prefers the endpoint with the fewest active streams
	// per unit of weight. It is the default.
	BalanceLeastConn Balance = "least_conn"
	// BalanceRoundRobin rotates through the endpoints in a smooth weighted
	// order driven by the caller's per-import counter.
	BalanceRoundRobin Balance = "round_robin"
	// BalanceSourceHash sends the same client IP to the same endpoint
	// while it is healthy (session affinity): the caller passes a hash of
	// the client's IP as rr, and endpoints are ranked by weighted
	// rendezvous hashing, so an endpoint going down moves only its own
	// clients, and they come back when it recovers.
	BalanceSourceHash Balance = "source_hash"
)

// ParseBalance validates a configured balance mode; "" means
// BalanceLeastConn.
func ParseBalance(s string) (Balance, error) {
	switch Balance(s) {
	case "", BalanceLeastConn:
		return BalanceLeastConn, nil
	case BalanceRoundRobin:
		return BalanceRoundRobin, nil
	case BalanceSourceHash:
		return BalanceSourceHash, nil
	}
	return "", fmt.Errorf("failover: unknown balance %q (want %q, %q or %q)", s, BalanceLeastConn, BalanceRoundRobin, BalanceSourceHash)
}

// maxExpandWeight caps a weight's share of the round-robin cycle so that a
// huge configured weight cannot make Order expensive.
const maxExpandWeight = 100

// Endpoint is one node exporting the service, as seen by the importing node.
type Endpoint struct {
	Node   string        // node name, unique
	Site   string        // the node's failure domain
	Local  bool          // on the importing node itself (dialled without a tunnel)
	Weight int           // relative share, >= 1; values < 1 count as 1
	Active int           // streams this importer has open to this endpoint for this service
	RTT    time.Duration // measured tunnel RTT; <= 0 means unknown (Local counts as 0)
	Down   bool          // node/tunnel down or backend unhealthy: tried only as a last resort
}

// weight returns the endpoint's effective weight (>= 1).
func (e Endpoint) weight() int {
	return max(e.Weight, 1)
}

// distance is the endpoint's RTT for ordering unlisted sites: 0 when local,
// the measured RTT when known, and farther than anything known otherwise.
func (e Endpoint) distance() time.Duration {
	switch {
	case e.Local:
		return 0
	case e.RTT > 0:
		return e.RTT
	}
	return math.MaxInt64
}

// Order returns a new slice holding eps in the order they should be tried.
// eps is not modified. The result is deterministic for identical inputs.
//
// Endpoints with Down=false come first; the Down ones follow as a last
// resort, ordered by the same rules.
//
// Endpoints are grouped by site. Sites named in sites come first, in that
// order. Other sites follow, nearest first: a site's distance is its lowest
// endpoint RTT, where a local endpoint counts as 0 and an unknown RTT as
// farther than any known one; ties go by site name.
//
// Within a site, balance decides; an unknown Balance acts as
// BalanceLeastConn.
//
// BalanceLeastConn orders by ascending Active/Weight, compared exactly
// without floats. Endpoints with equal load are sorted by name and the run
// is rotated by rr, so successive calls spread new connections over them.
// RTT does not order endpoints within a site: the rotation already fully
// orders each tie, and within one failure domain RTT differences are noise
// that would defeat the spreading.
//
// BalanceRoundRobin lays the endpoints, sorted by name, out in a smooth
// weighted cycle (nginx's smooth weighted round robin) in which each
// appears Weight times (capped at 100, divided by the weights' common
// divisor). The call starts at position rr mod cycle length and emits each
// endpoint the first time it is met. Each full cycle of consecutive rr
// values puts every endpoint first exactly its (reduced) weight times, and
// runs counted from rr = 0 stay within one of that share. Active is
// ignored.
//
// BalanceSourceHash ranks the endpoints by weighted rendezvous hashing of
// (rr, node name): rr is a hash of the client's IP (SourceKey), so one
// client always gets the same first endpoint while the set of healthy
// endpoints holds it, and an endpoint that goes down (to the Down group)
// moves only the clients it had. Active is ignored.
//
// rr is a per-import counter the caller increments once per connection
// (for BalanceSourceHash: SourceKey of the client's address).
func Order(eps []Endpoint, sites []string, balance Balance, rr uint64) []Endpoint {
	out := make([]Endpoint, 0, len(eps))
	for _, down := range []bool{false, true} {
		var group []Endpoint
		for _, ep := range eps {
			if ep.Down == down {
				group = append(group, ep)
			}
		}
		out = appendOrdered(out, group, sites, balance, rr)
	}
	return out
}

// siteGroup is the endpoints of one site within an Order group.
type siteGroup struct {
	name    string
	rank    int           // index in the preference list, len(sites) when unlisted
	nearest time.Duration // lowest endpoint distance
	eps     []Endpoint
}

// appendOrdered appends group, ordered by site then balance, to out. group
// is owned by the caller and may be reordered.
func appendOrdered(out, group []Endpoint, sites []string, balance Balance, rr uint64) []Endpoint {
	if len(group) == 0 {
		return out
	}
	for _, g := range groupSites(group, sites) {
		switch balance {
		case BalanceRoundRobin:
			orderRoundRobin(g.eps, rr)
		case BalanceSourceHash:
			orderSourceHash(g.eps, rr)
		default:
			orderLeastConn(g.eps, rr)
		}
		out = append(out, g.eps...)
	}
	return out
}

// groupSites groups eps by site and orders the sites: listed sites first in
// their order, then the others nearest first, ties by name.
func groupSites(group []Endpoint, sites []string) []*siteGroup {
	rank := make(map[string]int, len(sites))
	for i, s := range sites {
		if _, dup := rank[s]; !dup {
			rank[s] = i
		}
	}
	var groups []*siteGroup
	bySite := make(map[string]*siteGroup)
	for _, ep := range group {
		g := bySite[ep.Site]
		if g == nil {
			r, ok := rank[ep.Site]
			if !ok {
				r = len(sites)
			}
			g = &siteGroup{name: ep.Site, rank: r, nearest: math.MaxInt64}
			bySite[ep.Site] = g
			groups = append(groups, g)
		}
		g.nearest = min(g.nearest, ep.distance())
		g.eps = append(g.eps, ep)
	}
	slices.SortFunc(groups, func(a, b *siteGroup) int {
		return cmp.Or(
			cmp.Compare(a.rank, b.rank),
			cmp.Compare(a.nearest, b.nearest),
			strings.Compare(a.name, b.name),
		)
	})
	return groups
}

// compareLoad compares a.Active/a.Weight with b.Active/b.Weight exactly, by
// cross-multiplying in 128 bits. Negative Active counts as 0.
func compareLoad(a, b Endpoint) int {
	ahi, alo := bits.Mul64(uint64(max(a.Active, 0)), uint64(b.weight()))
	bhi, blo := bits.Mul64(uint64(max(b.Active, 0)), uint64(a.weight()))
	return cmp.Or(cmp.Compare(ahi, bhi), cmp.Compare(alo, blo))
}

func compareNode(a, b Endpoint) int {
	return strings.Compare(a.Node, b.Node)
}

// orderLeastConn sorts eps by load and rotates each run of equal load by rr.
func orderLeastConn(eps []Endpoint, rr uint64) {
	slices.SortFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(compareLoad(a, b), compareNode(a, b))
	})
	for i := 0; i < len(eps); {
		j := i + 1
		for j < len(eps) && compareLoad(eps[i], eps[j]) == 0 {
			j++
		}
		rotate(eps[i:j], int(rr%uint64(j-i)))
		i = j
	}
}

// rotate moves s[k] to the front, keeping the cyclic order.
func rotate(s []Endpoint, k int) {
	if k == 0 {
		return
	}
	slices.Reverse(s[:k])
	slices.Reverse(s[k:])
	slices.Reverse(s)
}

// orderRoundRobin orders eps by the smooth weighted cycle starting at rr.
func orderRoundRobin(eps []Endpoint, rr uint64) {
	slices.SortFunc(eps, compareNode)
	if len(eps) < 2 {
		return
	}
	weights := make([]int, len(eps))
	g := 0
	for i, ep := range eps {
		weights[i] = min(ep.weight(), maxExpandWeight)
		g = gcd(g, weights[i])
	}
	total := 0
	for i := range weights {
		weights[i] /= g
		total += weights[i]
	}
	cycle := smoothCycle(weights, total)
	start := int(rr % uint64(total))
	res := make([]Endpoint, 0, len(eps))
	seen := make([]bool, len(eps))
	for k := 0; len(res) < len(eps); k++ {
		i := cycle[(start+k)%total]
		if !seen[i] {
			seen[i] = true
			res = append(res, eps[i])
		}
	}
	copy(eps, res)
}

// smoothCycle returns one period (total picks) of nginx's smooth weighted
// round robin over weights: each index i appears weights[i] times, spread
// out as evenly as the weights allow. Ties go to the lower index.
func smoothCycle(weights []int, total int) []int {
	cycle := make([]int, total)
	cur := make([]int, len(weights))
	for s := range cycle {
		best := 0
		for i, w := range weights {
			cur[i] += w
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		cycle[s] = best
	}
	return cycle
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// SourceKey is the BalanceSourceHash key of a client IP address (its 16-byte
// form, so an IPv4 client and its IPv4-mapped IPv6 form agree).
func SourceKey(ip [16]byte) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for _, b := range ip {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is SplitMix64's finaliser: a good avalanche for hash inputs.
func mix64(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	return z ^ z>>31
}

// rendezvousScore is the weighted rendezvous (highest random weight) score
// of node for key: -weight / ln(u) with u uniform in (0, 1) from the hash.
func rendezvousScore(key uint64, node string, weight int) float64 {
	h := key
	for i := 0; i < len(node); i++ {
		h = mix64(h ^ uint64(node[i]))
	}
	h = mix64(h ^ uint64(len(node)))
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return -float64(weight) / math.Log(u)
}

// orderSourceHash orders eps by descending rendezvous score for key; ties
// (practically never) by name.
func orderSourceHash(eps []Endpoint, key uint64) {
	scores := make(map[string]float64, len(eps))
	for _, ep := range eps {
		scores[ep.Node] = rendezvousScore(key, ep.Node, ep.weight())
	}
	slices.SortFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(scores[b.Node], scores[a.Node]), compareNode(a, b))
	})
}
