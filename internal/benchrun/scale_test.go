package benchrun

import (
	"testing"
	"time"

	"github.com/meshd/meshd/node"
)

// TestConvergedAt: a node's convergence is the latest state_since of its
// peers, not the moment its status was read; clamped to [since, seen];
// the read's moment when a peer has no state_since (an older build).
func TestConvergedAt(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return t0.Add(d).Format(node.StateSinceLayout) }
	peer := func(since string) node.PeerStatus { return node.PeerStatus{State: "alive", StateSince: since} }
	since, seen := t0, t0.Add(10*time.Second)
	for _, tc := range []struct {
		name  string
		peers []node.PeerStatus
		want  time.Duration // from t0
	}{
		{"latest peer wins", []node.PeerStatus{peer(at(2 * time.Second)), peer(at(3500 * time.Millisecond)), peer(at(time.Second))}, 3500 * time.Millisecond},
		{"all alive before since", []node.PeerStatus{peer(at(-5 * time.Second))}, 0},
		{"after the read (clock step)", []node.PeerStatus{peer(at(12 * time.Second))}, 10 * time.Second},
		{"older build: no state_since", []node.PeerStatus{peer(at(time.Second)), peer("")}, 10 * time.Second},
		{"unreadable", []node.PeerStatus{peer("yesterday")}, 10 * time.Second},
		{"no peers", nil, 0},
	} {
		if got := convergedAt(tc.peers, since, seen).Sub(t0); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
