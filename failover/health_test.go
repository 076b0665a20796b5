package failover

import (
	"testing"
	"time"
)

// healthStep is one call at t0+at; usable is what Usable must say right
// after it.
type healthStep struct {
	at     time.Duration
	op     string // "up", "down" (Observe), "forget", "check" (Usable only)
	key    string // "" means "p"
	want   Transition
	usable bool
}

func runHealth(t *testing.T, h *Health, steps []healthStep) {
	t.Helper()
	for i, s := range steps {
		key := s.key
		if key == "" {
			key = "p"
		}
		now := t0.Add(s.at)
		got := TransitionNone
		switch s.op {
		case "up":
			got = h.Observe(key, true, now)
		case "down":
			got = h.Observe(key, false, now)
		case "forget":
			h.Forget(key)
		case "check":
		default:
			t.Fatalf("step %d: bad op %q", i, s.op)
		}
		if got != s.want {
			t.Fatalf("step %d (%v %s %s): transition %v, want %v", i, s.at, s.op, key, got, s.want)
		}
		if u := h.Usable(key, now); u != s.usable {
			t.Fatalf("step %d (%v %s %s): Usable = %v, want %v", i, s.at, s.op, key, u, s.usable)
		}
	}
}

func TestHealthSteps(t *testing.T) {
	const (
		none = TransitionNone
		down = TransitionDown
		up   = TransitionUp
	)
	tests := []struct {
		name  string
		cfg   HealthConfig
		steps []healthStep
	}{
		{
			name: "hold-down before failback",
			cfg:  HealthConfig{HoldDown: 2 * time.Second},
			steps: []healthStep{
				{at: 0, op: "check", usable: true}, // never seen
				{at: 0, op: "up", want: none, usable: true},
				{at: msd(1000), op: "down", want: down, usable: false},
				{at: msd(1500), op: "down", want: none, usable: false},
				{at: msd(2000), op: "up", want: none, usable: false}, // hold-down from 2s
				{at: msd(3000), op: "up", want: none, usable: false},
				{at: msd(3500), op: "down", want: none, usable: false}, // restarts the clock
				{at: msd(4000), op: "up", want: none, usable: false},   // from 4s
				{at: msd(5999), op: "check", usable: false},
				{at: msd(6000), op: "check", usable: true}, // without an Observe
				{at: msd(6500), op: "up", want: up, usable: true},
				{at: msd(7000), op: "up", want: none, usable: true},
				{at: msd(8000), op: "down", want: down, usable: false},
				{at: msd(8100), op: "up", want: none, usable: false},
				{at: msd(10100), op: "check", usable: true},
				{at: msd(10200), op: "down", want: none, usable: false}, // the Up was never reported
				{at: msd(10300), op: "up", want: none, usable: false},
				{at: msd(12299), op: "up", want: none, usable: false},
				{at: msd(12300), op: "up", want: up, usable: true},
			},
		},
		{
			name: "brand-new peer first seen down gets the hold-down",
			steps: []healthStep{
				{at: 0, op: "down", want: down, usable: false},
				{at: msd(100), op: "up", want: none, usable: false},
				{at: msd(2099), op: "check", usable: false},
				{at: msd(2100), op: "up", want: up, usable: true}, // default 2s
			},
		},
		{
			name: "forget makes a peer brand new",
			steps: []healthStep{
				{at: 0, op: "down", want: down, usable: false},
				{at: msd(100), op: "forget", usable: true},
				{at: msd(200), op: "up", want: none, usable: true},
			},
		},
		{
			name: "peers are independent",
			steps: []healthStep{
				{at: 0, op: "down", key: "a", want: down, usable: false},
				{at: 0, op: "up", key: "b", want: none, usable: true},
				{at: msd(100), op: "check", key: "a", usable: false},
			},
		},
		{
			name: "negative hold-down fails back at once",
			cfg:  HealthConfig{HoldDown: -1},
			steps: []healthStep{
				{at: 0, op: "up", want: none, usable: true},
				{at: msd(100), op: "down", want: down, usable: false},
				{at: msd(200), op: "up", want: up, usable: true},
			},
		},
		{
			name: "clock going backwards is no time elapsed",
			steps: []healthStep{
				{at: msd(1000), op: "down", want: down, usable: false},
				{at: msd(2000), op: "up", want: none, usable: false},
				{at: msd(1000), op: "check", usable: false},
				{at: msd(3999), op: "check", usable: false},
				{at: msd(4000), op: "check", usable: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runHealth(t, NewHealth(tt.cfg), tt.steps)
		})
	}
}

func TestTransitionString(t *testing.T) {
	for tr, want := range map[Transition]string{TransitionNone: "none", TransitionDown: "down", TransitionUp: "up", 7: "Transition(?)"} {
		if got := tr.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(tr), got, want)
		}
	}
}

func TestSilent(t *testing.T) {
	var zero time.Time
	at := func(ms int) time.Time { return t0.Add(msd(ms)) }
	tests := []struct {
		name     string
		lastPong time.Time
		pending  time.Time
		srtt     time.Duration
		now      time.Time
		want     bool
	}{
		{name: "nothing pending", lastPong: at(0), now: at(60000), want: false},
		{name: "never answered, nothing pending", now: at(60000), want: false},
		{name: "pending within floor", lastPong: at(0), pending: at(100), now: at(1100), want: false},
		{name: "pending just past floor", lastPong: at(0), pending: at(100), now: at(1101), want: true},
		{name: "never answered, past floor", pending: at(0), now: at(1001), want: true},
		{name: "slow peer: 8*srtt above floor", pending: at(0), srtt: msd(200), now: at(1600), want: false},
		{name: "slow peer: past 8*srtt", pending: at(0), srtt: msd(200), now: at(1601), want: true},
		{name: "fast peer: floor applies", pending: at(0), srtt: msd(5), now: at(900), want: false},
		{name: "pong after the pending ping: lost ping", lastPong: at(500), pending: at(100), now: at(9000), want: false},
		{name: "pong at the same instant", lastPong: at(100), pending: at(100), now: at(9000), want: false},
		{name: "pending in the future", pending: at(5000), now: at(0), want: false},
		{name: "zero now", pending: at(0), now: zero, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Silent(tt.lastPong, tt.pending, tt.srtt, time.Second, 8, tt.now); got != tt.want {
				t.Errorf("Silent = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestHealthObserved: a peer is observed from its first observation until
// it is forgotten.
func TestHealthObserved(t *testing.T) {
	h := NewHealth(HealthConfig{HoldDown: time.Second})
	now := time.Unix(1000, 0)
	if h.Observed("p") {
		t.Fatal("observed before any observation")
	}
	h.Observe("p", true, now)
	if !h.Observed("p") {
		t.Fatal("not observed after an observation")
	}
	h.Forget("p")
	if h.Observed("p") {
		t.Fatal("observed after Forget")
	}
}
