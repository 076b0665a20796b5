package tunnel

import (
	"testing"
	"time"
)

// TestPathSwitching steps a peer's probe record through a new peer, a dead
// direct path, its return, and a lossy (gray) path. Each round is one of
// probeLoop's: judge, then send a probe, answered or not (an answer
// arrives before the next round). The record is a peer's own state
// machine: no bind, no lock, no socket.
func TestPathSwitching(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := newPeerPath(now, true)
	steps := []struct {
		name     string
		n        int
		answered func(i int) bool
		want     string
	}{
		{"new peer starts on the relay", 1, func(int) bool { return true }, "relay"},
		{"2 judged answered probes: still relay", 3, func(int) bool { return true }, "relay"},
		{"3 judged answered probes: direct", 1, func(int) bool { return true }, "direct"},
		{"steady", 20, func(int) bool { return true }, "direct"},
		{"direct path dies: 3 unanswered in a row, before the window's verdict", 5, func(int) bool { return false }, "relay"},
		{"still dead", 21, func(int) bool { return false }, "relay"},
		{"back, but not a full window yet", 7, func(int) bool { return true }, "relay"},
		{"full window answered: direct again", 3, func(int) bool { return true }, "direct"},
		{"70% loss: relay", 12, func(i int) bool { return i%10 < 3 }, "relay"},
		{"70% loss stays on relay", 40, func(i int) bool { return i%10 < 3 }, "relay"},
		{"loss ends: direct", 10, func(int) bool { return true }, "direct"},
	}
	stamp := uint64(0)
	for _, s := range steps {
		for i := 0; i < s.n; i++ {
			now = now.Add(probeEvery)
			p.judge(now)
			stamp++
			if seq := p.startProbe(stamp); s.answered(i) {
				p.ack(seq)
			}
		}
		got := "direct"
		if p.useRelay {
			got = "relay"
		}
		if got != s.want {
			t.Fatalf("%s: path %s, want %s", s.name, got, s.want)
		}
	}
}

// TestPathFirstVerdict: a new peer moves to direct once its newest
// probeFirstVerdict judged probes are answered, whatever became of the
// earlier ones (sent before the peer knew this node: it drops probes from
// a stranger), and those earlier losses do not send it back to the relay.
// Before, a new peer needed all of the window answered: one early loss
// cost eight answered probes, at the idle rate 24-40 s of `relay`.
func TestPathFirstVerdict(t *testing.T) {
	for _, lost := range []int{1, 2, 5, 8, 20} {
		now := time.Unix(1_700_000_000, 0)
		p := newPeerPath(now, true)
		stamp, rounds := uint64(0), 0
		for i := 0; i < lost+40 && p.useRelay; i++ {
			now = now.Add(probeEvery)
			p.judge(now)
			rounds++
			stamp++
			if seq := p.startProbe(stamp); i >= lost {
				p.ack(seq)
			}
		}
		// Rounds: the lost ones, probeFirstVerdict answered and judged, the
		// one in flight, and the judging round.
		if want := lost + probeFirstVerdict + 2; p.useRelay || rounds > want {
			t.Errorf("%d early probes lost: relay %v after %d rounds, want direct after at most %d", lost, p.useRelay, rounds, want)
			continue
		}
		for range 3 * probeWindow {
			now = now.Add(probeEvery)
			p.judge(now)
			stamp++
			p.ack(p.startProbe(stamp))
			if p.useRelay {
				t.Fatalf("%d early probes lost: back on the relay after direct was confirmed", lost)
			}
		}
	}
}
