package gossip

import (
	"fmt"
	"testing"
	"time"
)

// TestCatchUpSteps walks the catch-up schedule through step tables: each
// row is an event at an offset from t0 (a trigger, a step that may run a
// sync, or a step that must not), with what step must say.
func TestCatchUpSteps(t *testing.T) {
	const (
		trig = iota // c.trigger(at)
		run         // step must say sync; then c.synced(at)
		wait        // step must say wait (0: nothing planned)
	)
	type ev struct {
		at   time.Duration
		kind int
		wait time.Duration
	}
	s := time.Second
	for _, tc := range []struct {
		name string
		evs  []ev
	}{
		{"idle: nothing planned", []ev{
			{0, wait, 0},
			{time.Hour, wait, 0},
		}},
		{"one trigger: syncs at +2 s and +6 s, then none", []ev{
			{0, trig, 0},
			{0, wait, 2 * s},
			{1900 * time.Millisecond, wait, 100 * time.Millisecond},
			{2 * s, run, 0},
			{2 * s, wait, 4 * s},
			{6 * s, run, 0}, // +6 s ≤ until (+6 s)
			{6 * s, wait, 0},
			{time.Hour, wait, 0},
		}},
		{"a late step runs once, not for each missed slot", []ev{
			{0, trig, 0},
			{5 * s, run, 0},
			{5 * s, wait, 0}, // next would be +9 s, after until (+6 s)
		}},
		{"triggers during a schedule extend it, not speed it up", []ev{
			{0, trig, 0},
			{1 * s, trig, 0}, // until +7 s; due stays +2 s
			{1 * s, wait, 1 * s},
			{2 * s, run, 0},
			{5 * s, trig, 0}, // until +11 s
			{6 * s, run, 0},
			{10 * s, run, 0},
			{10 * s, wait, 0}, // +14 s > until
		}},
		{"a new change after the schedule ended starts a new one", []ev{
			{0, trig, 0},
			{2 * s, run, 0},
			{6 * s, run, 0},
			{20 * s, trig, 0},
			{20 * s, wait, 2 * s},
			{22 * s, run, 0},
		}},
		{"budget: at most 4 syncs in 60 s under endless changes", []ev{
			{0, trig, 0},
			{2 * s, run, 0},
			{3 * s, trig, 0},
			{6 * s, run, 0},
			{7 * s, trig, 0},
			{10 * s, run, 0},
			{11 * s, trig, 0},
			{14 * s, run, 0},
			{15 * s, trig, 0},  // until +21 s
			{18 * s, wait, 0},  // the 5th would be due at +18 s, the budget frees at +62 s: after until, dropped
			{19 * s, trig, 0},  // a change again: due +21 s, until +25 s, budget still +62 s
			{21 * s, wait, 0},  // dropped again
			{59 * s, trig, 0},  // due +61 s, until +65 s
			{61 * s, wait, s},  // the budget frees at +62 s (the sync at +2 s leaves the window)
			{62 * s, run, 0},   // 4 in (2 s, 62 s]
			{62 * s, wait, 0},  // +66 s > until
			{100 * s, trig, 0}, // budget: syncs at 6, 10, 14, 62: the 4th from the end is 6 s → free
			{100 * s, wait, 2 * s},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC)
			var c catchUp
			for i, e := range tc.evs {
				now := t0.Add(e.at)
				where := fmt.Sprintf("event %d (+%v)", i, e.at)
				switch e.kind {
				case trig:
					c.trigger(now)
				case run:
					if sync, w := c.step(now); !sync {
						t.Fatalf("%s: no sync (wait %v), want one", where, w)
					}
					c.synced(now)
				case wait:
					if sync, w := c.step(now); sync || w != e.wait {
						t.Fatalf("%s: sync %v wait %v, want no sync, wait %v", where, sync, w, e.wait)
					}
				}
			}
		})
	}
}
