package gossip

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"
)

// TestIdleGossipSleeps: memberlist's gossip loop (patched, see
// third_party/memberlist/README.meshd.md) does not run its rounds while
// nothing is queued, so an idle node is asked for broadcasts only for its
// probes and its answers to others' (about two a second), not five times
// a second more for rounds that send nothing; and a record queued while the
// loop sleeps is sent at once (WakeGossip), not with the next probe.
func TestIdleGossipSleeps(t *testing.T) {
	nodes := cluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	waitState(t, 5*time.Second, "a", StateAlive, b)
	waitState(t, 5*time.Second, "b", StateAlive, a)
	waitFor(t, 10*time.Second, "queues drained", func() string {
		if qa, qb := a.Stats().Queued, b.Stats().Queued; qa+qb != 0 {
			return fmt.Sprintf("queued a=%d b=%d", qa, qb)
		}
		return ""
	})
	time.Sleep(2 * time.Second) // memberlist's own queue (alive messages) drains too

	const window = 3 * time.Second
	p0 := a.Stats().Polls
	time.Sleep(window)
	polls := a.Stats().Polls - p0
	// Probes every second and answers to b's: about 6 in 3 s. With a round
	// every 200 ms as well: about 21.
	if polls > 10 {
		t.Errorf("an idle node was polled for broadcasts %d times in %s; want at most 10 (no gossip rounds while nothing is queued)", polls, window)
	}

	// Changes made while the loop sleeps spread at once: the median of 7
	// is far below the ~250 ms the next probe or answer would take. (A
	// change's record is sent in 4 rounds, 800 ms, at one peer: changes
	// are made after that, when the loop sleeps again.)
	var took []time.Duration
	for i := range 7 {
		time.Sleep(time.Duration(1200+i*97) * time.Millisecond) // at various phases of the probes
		want := []Export{{Name: fmt.Sprintf("svc-%d", i), Weight: 1, Healthy: true}}
		start := time.Now()
		a.SetExports(want)
		waitFor(t, 5*time.Second, "b sees a's change", func() string {
			if m, _ := b.member("a"); !slices.Equal(m.Exports, want) {
				return fmt.Sprintf("b sees %v", m.Exports)
			}
			return ""
		})
		took = append(took, time.Since(start))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	if med := took[len(took)/2]; med > 60*time.Millisecond {
		t.Errorf("a change queued while gossip sleeps reached b in %v (median of %v); want within 60 ms (sent at once, not with the next probe)", med, took)
	}
}
