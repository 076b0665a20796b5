package failover

import (
	"sync"
	"time"
)

// HealthConfig configures a Health. The zero value means the defaults.
type HealthConfig struct {
	// HoldDown is how long a peer that has been down must be observed
	// reachable without interruption before it is usable again, so that
	// traffic fails back only to a peer that stays up. 0 means 2s; a
	// negative value disables the hold-down.
	HoldDown time.Duration
}

// DefaultHealthConfig returns the configuration the zero value stands for.
func DefaultHealthConfig() HealthConfig {
	return HealthConfig{HoldDown: 2 * time.Second}
}

// Transition is a change of a peer's usability, as reported by
// Health.Observe.
type Transition int

const (
	TransitionNone Transition = iota // usability unchanged
	TransitionDown                   // the peer became unusable
	TransitionUp                     // the peer became usable again
)

func (t Transition) String() string {
	switch t {
	case TransitionNone:
		return "none"
	case TransitionDown:
		return "down"
	case TransitionUp:
		return "up"
	}
	return "Transition(?)"
}

// Health tracks whether peers are usable, with a hold-down before
// failback. It is safe for concurrent use.
//
// A peer that has never been observed, or has only ever been observed
// reachable, is usable. The first unreachable observation makes it
// unusable at once. From then on it is usable only after it has been
// observed reachable continuously for HoldDown: the clock starts at the
// first reachable observation after an unreachable one and restarts at
// every unreachable observation. Usable turns true by itself once HoldDown
// has passed; no further Observe is needed.
//
// Observe reports transitions as it notices them, relative to the last one
// it reported: the first Observe at which the peer is unusable reports
// TransitionDown, and the first Observe at which it is usable again
// reports TransitionUp, even if Usable already returned true a moment
// earlier. Reported transitions therefore alternate Down, Up, Down…; a
// usable window that opened and closed between two Observe calls is not
// reported.
type Health struct {
	holdDown time.Duration // immutable; 0 when disabled

	mu    sync.Mutex
	peers map[string]*peerHealth // guarded by mu
}

// peerHealth is what Health knows about one peer.
type peerHealth struct {
	reachable bool      // the last observation
	since     time.Time // when the current reachable run began; valid if reachable
	wasDown   bool      // ever observed unreachable: the hold-down applies
	reported  bool      // usability as last reported by Observe
}

// NewHealth returns a Health that knows no peers.
func NewHealth(cfg HealthConfig) *Health {
	hd := cfg.HoldDown
	switch {
	case hd == 0:
		hd = DefaultHealthConfig().HoldDown
	case hd < 0:
		hd = 0
	}
	return &Health{holdDown: hd, peers: make(map[string]*peerHealth)}
}

// Observe records whether peer key was reachable at now, as derived by the
// caller from session pings or gossip state (see Silent), and returns the
// transition this observation reveals, if any.
func (h *Health) Observe(key string, reachable bool, now time.Time) Transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[key]
	if p == nil {
		p = &peerHealth{reported: true}
		h.peers[key] = p
	}
	switch {
	case !reachable:
		p.reachable = false
		p.wasDown = true
	case !p.reachable:
		p.reachable = true
		p.since = now
	}
	usable := h.usableLocked(p, now)
	if usable == p.reported {
		return TransitionNone
	}
	p.reported = usable
	if usable {
		return TransitionUp
	}
	return TransitionDown
}

// Usable reports whether peer key may carry traffic at now. A peer never
// observed is usable.
func (h *Health) Usable(key string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[key]
	return p == nil || h.usableLocked(p, now)
}

func (h *Health) usableLocked(p *peerHealth, now time.Time) bool {
	if !p.reachable {
		return false
	}
	// A clock that went backwards counts as no time elapsed.
	return !p.wasDown || now.Sub(p.since) >= h.holdDown
}

// Observed reports whether peer key has been observed since it was last
// forgotten (or ever).
func (h *Health) Observed(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peers[key] != nil
}

// Forget drops what is known about peer key, for peers that left; if it
// comes back it is treated as brand new.
func (h *Health) Forget(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.peers, key)
}

// Silent reports whether a peer should count as unreachable at now, given
// the time of its last pong (zero: never) and the send time of its oldest
// unanswered ping (zero: none): it does when that ping is older than
// max(floor, mult*srtt) (see AttemptTimeout; srtt <= 0 means unknown and
// the floor applies). A pong received at or after pending was sent shows
// the peer is alive and the ping was merely lost, so the peer is not
// silent; neither is it with no ping pending.
func Silent(lastPong, pending time.Time, srtt, floor time.Duration, mult int, now time.Time) bool {
	if pending.IsZero() {
		return false
	}
	if !lastPong.IsZero() && !lastPong.Before(pending) {
		return false
	}
	return now.Sub(pending) > AttemptTimeout(srtt, floor, mult)
}
