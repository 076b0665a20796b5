package node

import (
	"testing"
	"time"

	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/tunnel"
)

func TestPeerReachable(t *testing.T) {
	now := time.Unix(1000, 0)
	up := func(mod func(*tunnel.PeerStats)) tunnel.PeerStats {
		st := tunnel.PeerStats{Session: tunnel.SessionStateUp, SessionUp: true, LastPong: now.Add(-300 * time.Millisecond)}
		if mod != nil {
			mod(&st)
		}
		return st
	}
	for _, tc := range []struct {
		name  string
		state gossip.State
		st    tunnel.PeerStats
		want  bool
	}{
		{"idle session, alive by gossip", gossip.StateAlive, tunnel.PeerStats{Session: tunnel.SessionStateIdle}, true},
		{"idle session, suspect by gossip", gossip.StateSuspect, tunnel.PeerStats{Session: tunnel.SessionStateIdle}, false},
		{"left", gossip.StateLeft, up(nil), false},
		{"up, answered", gossip.StateAlive, up(nil), true},
		{"down session", gossip.StateAlive, tunnel.PeerStats{Session: tunnel.SessionStateDown}, false},
		{"up, ping pending 200ms", gossip.StateAlive, up(func(s *tunnel.PeerStats) { s.PingPending = now.Add(-200 * time.Millisecond) }), true},
		{"up, ping pending 700ms", gossip.StateAlive, up(func(s *tunnel.PeerStats) {
			s.PingPending, s.LastPong = now.Add(-700*time.Millisecond), now.Add(-1700*time.Millisecond)
		}), false},
		{"up, pending 700ms but a later pong", gossip.StateAlive, up(func(s *tunnel.PeerStats) { s.PingPending = now.Add(-700 * time.Millisecond) }), true},
		{"dead by gossip, fresh pong", gossip.StateDead, up(func(s *tunnel.PeerStats) { s.LastPong = now.Add(-100 * time.Millisecond) }), true},
		{"dead by gossip, old pong", gossip.StateDead, up(func(s *tunnel.PeerStats) { s.LastPong = now.Add(-800 * time.Millisecond) }), false},
	} {
		m := gossip.Member{Name: "p", State: tc.state}
		if got := peerReachable(m, tc.st, now); got != tc.want {
			t.Errorf("%s: peerReachable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestHealthDue: a quiet, reachable peer is judged every healthIdleEvery;
// one with streams, a ping outstanding or unreachable at every tick.
func TestHealthDue(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name      string
		st        tunnel.PeerStats
		reachable bool
		want      time.Duration
	}{
		{"quiet and reachable", tunnel.PeerStats{}, true, healthIdleEvery},
		{"streams", tunnel.PeerStats{Streams: 1}, true, healthTick},
		{"ping outstanding", tunnel.PeerStats{PingPending: now}, true, healthTick},
		{"unreachable", tunnel.PeerStats{}, false, healthTick},
	} {
		if got := healthDue(tc.st, tc.reachable); got != tc.want {
			t.Errorf("%s: healthDue = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Worst case for a quiet peer that dies just after being judged: its
	// next ping goes out within IdlePingInterval, is judged silent after
	// silentFloor, and seen within a tick of that.
	if healthIdleEvery > silentFloor {
		t.Errorf("healthIdleEvery %v > silentFloor %v: a silent quiet peer would be seen late", healthIdleEvery, silentFloor)
	}
}
