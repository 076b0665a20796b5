package node

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/ratelimit"
	"github.com/meshd/meshd/tunnel"
)

// The limits of README "Hostile input and limits" on what authenticated peers and local clients may
// hold: limits.max_streams_per_peer, limits.max_peers, exports[].max_conns,
// imports[].max_conns, rate and burst. Each is read from the configuration
// in force at the moment it is applied (Config()), so a reload changes it
// for what comes next; what is already open is never cut. Refusals are
// counted and logged at most once a second per kind, with the number
// suppressed in between.

// limitLogEvery is how often at most a refusal of one kind is logged.
const limitLogEvery = time.Second

// nodeLimits holds the node-wide limit state.
type nodeLimits struct {
	mu        sync.Mutex
	streams   map[key.PublicKey]int  // guarded by mu: streams each peer holds open to us
	given     map[key.PublicKey]bool // guarded by mu: peers given tunnel state by the last reconcile
	lingering map[key.PublicKey]int  // guarded by mu: refused streams each peer has not closed yet

	streamsRefused atomic.Uint64 // streams refused: max_streams_per_peer
	exportRefused  atomic.Uint64 // streams refused: an export's max_conns
	peersLeftOut   atomic.Int64  // members without tunnel state now: max_peers
	sessionsReset  atomic.Uint64 // sessions reset for opening streams beyond the limit
	httpEvicted    atomic.Uint64 // metrics.listen connections closed to make room (metrics.go)

	streamLog, exportLog, peersLog *ratelimit.Every
}

func newNodeLimits() *nodeLimits {
	return &nodeLimits{
		streams:   make(map[key.PublicKey]int),
		given:     make(map[key.PublicKey]bool),
		lingering: make(map[key.PublicKey]int),
		streamLog: ratelimit.NewEvery(limitLogEvery),
		exportLog: ratelimit.NewEvery(limitLogEvery),
		peersLog:  ratelimit.NewEvery(limitLogEvery),
	}
}

// maxStreamsPerPeer is limits.max_streams_per_peer in force (0: default).
func maxStreamsPerPeer(c *config.Config) int {
	if c.Limits.MaxStreamsPerPeer > 0 {
		return c.Limits.MaxStreamsPerPeer
	}
	return config.DefaultMaxStreamsPerPeer
}

func maxPeers(c *config.Config) int {
	if c.Limits.MaxPeers > 0 {
		return c.Limits.MaxPeers
	}
	return config.DefaultMaxPeers
}

// acquireStream counts a stream peer opened, or reports false when peer
// already holds max streams.
func (l *nodeLimits) acquireStream(peer key.PublicKey, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[peer] >= max {
		return false
	}
	l.streams[peer]++
	return true
}

func (l *nodeLimits) releaseStream(peer key.PublicKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[peer]--; l.streams[peer] <= 0 {
		delete(l.streams, peer)
	}
}

// A refused stream is half-closed by us; yamux keeps it, able to receive,
// until the peer closes its side too (a meshd importer does at once) or
// yamux's close timeout (30 s). The refusing goroutine waits for that,
// discarding what arrives, and counts the stream as lingering meanwhile. A
// peer with more than lingerMax refused streams it does not close is not
// a meshd behaving: its session is reset (every stream on it ends, it is
// redialled), so refused streams cannot pile up.
const (
	lingerFor = 30 * time.Second
	lingerMin = 256
)

// lingerMax is how many refused streams a peer may leave open.
func lingerMax(streams int) int { return max(lingerMin, streams) }

// lingerBegin counts a refused stream of peer as lingering, or reports
// false when the peer already has max of them.
func (l *nodeLimits) lingerBegin(peer key.PublicKey, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lingering[peer] >= max {
		return false
	}
	l.lingering[peer]++
	return true
}

func (l *nodeLimits) lingerEnd(peer key.PublicKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lingering[peer]--; l.lingering[peer] <= 0 {
		delete(l.lingering, peer)
	}
}

// streamsOf returns the streams peer holds open to this node.
func (l *nodeLimits) streamsOf(peer key.PublicKey) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.streams[peer]
}

// logLimited writes one WARN line if gate allows, with the number of lines
// suppressed since the last.
func logLimited(lg *slog.Logger, gate *ratelimit.Every, msg string, args ...any) {
	ok, suppressed := gate.Allow(time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	lg.Warn(msg, args...)
}

// admitStream applies max_streams_per_peer and the export's max_conns to
// a stream peer opened for service. It returns the release func to call
// once when the stream ends, or ok false after answering and closing s.
func (n *Node) admitStream(peer key.PublicKey, s net.Conn) (release func(), ok bool) {
	cfg := n.Config()
	if max := maxStreamsPerPeer(cfg); !n.lim.acquireStream(peer, max) {
		n.lim.streamsRefused.Add(1)
		logLimited(n.log, n.lim.streamLog, "limits: stream refused: peer holds max_streams_per_peer streams",
			"peer", n.peerName(peer), "max", max)
		// Counted before the close, so that once the peer sees the
		// refusal the count includes it.
		if !n.lim.lingerBegin(peer, lingerMax(max)) {
			reset := n.tun.ResetSession(peer)
			if ys, ok := s.(interface{ Session() *yamux.Session }); ok {
				ys.Session().Close() // the one this stream came on, even if no longer the peer's current
				reset = true
			}
			if reset {
				n.lim.sessionsReset.Add(1)
				n.log.Warn("limits: session reset: peer leaves its refused streams open",
					"peer", n.peerName(peer), "max_streams_per_peer", max, "refused_open", lingerMax(max))
			}
			s.Close()
			return nil, false
		}
		s.Close()
		s.SetReadDeadline(time.Now().Add(lingerFor))
		io.Copy(io.Discard, s) // until the peer closes its side too
		n.lim.lingerEnd(peer)
		return nil, false
	}
	return func() { n.lim.releaseStream(peer) }, true
}

// exportSlot takes one of e's max_conns slots, or reports false.
func (e *exporter) exportSlot() (release func(), ok bool) {
	max := int64(e.cfg().MaxConns)
	if max <= 0 {
		return func() {}, true
	}
	if e.slots.Add(1) > max {
		e.slots.Add(-1)
		return nil, false
	}
	return func() { e.slots.Add(-1) }, true
}

// capPeers applies limits.max_peers to the tunnel peers reconcile is about
// to install: when there are more, members that are alive or suspect come
// before dead ones and, within each, peers that already have tunnel state
// come first (so a newcomer cannot push out an established peer), then by
// name. The rest get no tunnel state; that is logged at most once a second.
func (n *Node) capPeers(peers []tunnel.Peer, members []gossip.Member) []tunnel.Peer {
	max := maxPeers(n.Config())
	n.lim.mu.Lock()
	defer n.lim.mu.Unlock()
	if len(peers) <= max {
		n.lim.given = make(map[key.PublicKey]bool, len(peers))
		for _, p := range peers {
			n.lim.given[p.PublicKey] = true
		}
		n.lim.peersLeftOut.Store(0)
		return peers
	}
	type cand struct {
		p     tunnel.Peer
		dead  bool
		had   bool
		name  string
		index int
	}
	byKey := make(map[key.PublicKey]gossip.Member, len(members))
	for _, m := range members {
		byKey[m.Meta.PublicKey] = m
	}
	cs := make([]cand, len(peers))
	for i, p := range peers {
		m := byKey[p.PublicKey]
		cs[i] = cand{p: p, dead: m.State == gossip.StateDead, had: n.lim.given[p.PublicKey], name: m.Name}
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		switch {
		case a.dead != b.dead:
			if a.dead {
				return 1
			}
			return -1
		case a.had != b.had:
			if a.had {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]tunnel.Peer, 0, max)
	given := make(map[key.PublicKey]bool, max)
	for _, c := range cs[:max] {
		out = append(out, c.p)
		given[c.p.PublicKey] = true
	}
	n.lim.given = given
	left := len(peers) - max
	n.lim.peersLeftOut.Store(int64(left))
	logLimited(n.log, n.lim.peersLog, fmt.Sprintf("limits: %d members beyond max_peers get no tunnel state", left),
		"max", max, "members", len(peers), "first_left_out", cs[max].name)
	return out
}

// importGate applies an import's max_conns, rate and burst to accepted
// client connections.
type importGate struct {
	open    atomic.Int64  // connections admitted and not finished
	limited atomic.Uint64 // connections closed at once: over max_conns or rate

	mu      sync.Mutex
	bucket  *ratelimit.Bucket // guarded by mu
	rate    float64           // guarded by mu: what bucket was set to
	burst   int               // guarded by mu
	log     *ratelimit.Every  // refusals
	failLog *ratelimit.Every  // connections that found no endpoint (imports.go)
}

func newImportGate(c config.Import) *importGate {
	return &importGate{bucket: ratelimit.NewBucket(c.Rate, c.Burst), rate: c.Rate, burst: c.Burst,
		log: ratelimit.NewEvery(limitLogEvery), failLog: ratelimit.NewEvery(limitLogEvery)}
}

// set changes the token bucket's rate and burst (a reload); the tokens
// held are kept up to the new burst.
func (g *importGate) set(rate float64, burst int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if rate == g.rate && burst == g.burst {
		return
	}
	g.rate, g.burst = rate, burst
	g.bucket.Set(rate, burst)
}

// admit reports why a connection accepted at now must be closed at once
// under c's limits, or "" and counts it open (call done when it ends).
func (g *importGate) admit(c *config.Import, now time.Time) string {
	g.set(c.Rate, c.Burst)
	if c.MaxConns > 0 {
		if g.open.Add(1) > int64(c.MaxConns) {
			g.open.Add(-1)
			g.limited.Add(1)
			return fmt.Sprintf("max_conns (%d) reached", c.MaxConns)
		}
	} else {
		g.open.Add(1)
	}
	if !g.bucket.Allow(now) {
		g.open.Add(-1)
		g.limited.Add(1)
		return fmt.Sprintf("rate (%g/s, burst %d) exceeded", c.Rate, max(c.Burst, int(max(1, c.Rate))))
	}
	return ""
}

func (g *importGate) done() { g.open.Add(-1) }
