package failover

import (
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is the base of every step table; steps give offsets from it.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func msd(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// breakerStep is one call at t0+at; want is Allow's result, open is what
// Open must say right after the call.
type breakerStep struct {
	at   time.Duration
	op   string // "allow", "fail", "ok", "forget", "check" (Open only)
	key  string // "" means "a"
	want bool   // allow: result
	open bool
}

func runBreaker(t *testing.T, b *Breaker, steps []breakerStep) {
	t.Helper()
	for i, s := range steps {
		key := s.key
		if key == "" {
			key = "a"
		}
		now := t0.Add(s.at)
		switch s.op {
		case "allow":
			if got := b.Allow(key, now); got != s.want {
				t.Fatalf("step %d (%v allow %s) = %v, want %v", i, s.at, key, got, s.want)
			}
		case "fail":
			b.Failure(key, now)
		case "ok":
			b.Success(key, now)
		case "forget":
			b.Forget(key)
		case "check":
		default:
			t.Fatalf("step %d: bad op %q", i, s.op)
		}
		if got := b.Open(key, now); got != s.open {
			t.Fatalf("step %d (%v %s %s): Open = %v, want %v", i, s.at, s.op, key, got, s.open)
		}
	}
}

func TestBreakerSteps(t *testing.T) {
	cfg := BreakerConfig{Cooldown: time.Second, MaxCooldown: 4 * time.Second}
	tests := []struct {
		name  string
		steps []breakerStep
	}{
		{
			name: "backoff doubles to the cap and resets on success",
			steps: []breakerStep{
				{at: 0, op: "allow", want: true},
				{at: 0, op: "fail", open: true}, // open until 1s
				{at: msd(500), op: "allow", want: false, open: true},
				{at: msd(999), op: "check", open: true},
				{at: msd(1000), op: "check", open: false},             // due a retry
				{at: msd(1000), op: "allow", want: true, open: true},  // the trial
				{at: msd(1000), op: "allow", want: false, open: true}, // everyone else
				{at: msd(1200), op: "fail", open: true},               // failed trial: 2s, until 3.2s
				{at: msd(3199), op: "allow", want: false, open: true},
				{at: msd(3200), op: "allow", want: true, open: true},
				{at: msd(3300), op: "fail", open: true}, // 4s, until 7.3s
				{at: msd(7299), op: "allow", want: false, open: true},
				{at: msd(7300), op: "allow", want: true, open: true},
				{at: msd(7400), op: "fail", open: true}, // 8s capped to 4s, until 11.4s
				{at: msd(11399), op: "allow", want: false, open: true},
				{at: msd(11400), op: "allow", want: true, open: true},
				{at: msd(11500), op: "ok", open: false},
				{at: msd(11500), op: "allow", want: true},
				{at: msd(11500), op: "allow", want: true},
				{at: msd(11600), op: "fail", open: true}, // back to 1s, until 12.6s
				{at: msd(12599), op: "allow", want: false, open: true},
				{at: msd(12600), op: "allow", want: true, open: true},
			},
		},
		{
			name: "a trial that never reports does not wedge the key",
			steps: []breakerStep{
				{at: 0, op: "fail", open: true},
				{at: msd(1000), op: "allow", want: true, open: true}, // trial, then its caller crashes
				{at: msd(1500), op: "allow", want: false, open: true},
				{at: msd(1999), op: "allow", want: false, open: true},
				{at: msd(2000), op: "check", open: false},
				{at: msd(2000), op: "allow", want: true, open: true}, // new trial, same cooldown
				{at: msd(2000), op: "allow", want: false, open: true},
				{at: msd(2500), op: "fail", open: true}, // escalates to 2s, until 4.5s
				{at: msd(4499), op: "allow", want: false, open: true},
				{at: msd(4500), op: "allow", want: true, open: true},
			},
		},
		{
			name: "stragglers failing while open count once",
			steps: []breakerStep{
				{at: 0, op: "fail", open: true},
				{at: msd(100), op: "fail", open: true},
				{at: msd(200), op: "fail", open: true},
				{at: msd(999), op: "fail", open: true},
				{at: msd(1000), op: "allow", want: true, open: true},
				{at: msd(1000), op: "fail", open: true}, // the trial: 2s, not 8s
				{at: msd(2999), op: "allow", want: false, open: true},
				{at: msd(3000), op: "allow", want: true, open: true},
			},
		},
		{
			name: "a failure once the cooldown has passed escalates without a trial",
			steps: []breakerStep{
				{at: 0, op: "fail", open: true},
				{at: msd(1500), op: "check", open: false},
				{at: msd(1500), op: "fail", open: true}, // 2s, until 3.5s
				{at: msd(3499), op: "allow", want: false, open: true},
				{at: msd(3500), op: "allow", want: true, open: true},
			},
		},
		{
			name: "a late success while open closes the key",
			steps: []breakerStep{
				{at: 0, op: "fail", open: true},
				{at: msd(300), op: "ok", open: false},
				{at: msd(300), op: "allow", want: true},
			},
		},
		{
			name: "keys are independent; forget closes",
			steps: []breakerStep{
				{at: 0, op: "fail", key: "a", open: true},
				{at: 0, op: "allow", key: "b", want: true},
				{at: 0, op: "fail", key: "b", open: true},
				{at: msd(100), op: "forget", key: "a", open: false},
				{at: msd(100), op: "allow", key: "a", want: true},
				{at: msd(100), op: "allow", key: "b", want: false, open: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runBreaker(t, NewBreaker(cfg), tt.steps)
		})
	}
}

func TestBreakerMemory(t *testing.T) {
	b := NewBreaker(BreakerConfig{})
	for _, k := range []string{"s/a", "s/b", "t/a"} {
		b.Failure(k, t0)
	}
	if b.Len() != 3 {
		t.Fatalf("Len = %d, want 3", b.Len())
	}
	b.Success("s/a", t0)
	b.Forget("s/b")
	b.Success("never/failed", t0)
	if b.Len() != 1 {
		t.Fatalf("Len = %d, want 1", b.Len())
	}
}

func TestBreakerDefaults(t *testing.T) {
	tests := []struct {
		cfg  BreakerConfig
		n    int
		want time.Duration
	}{
		{BreakerConfig{}, 1, time.Second},
		{BreakerConfig{}, 5, 16 * time.Second},
		{BreakerConfig{}, 6, 30 * time.Second},
		{BreakerConfig{}, 64, 30 * time.Second},
		{BreakerConfig{Cooldown: -1, MaxCooldown: -1}, 2, 2 * time.Second},
		{BreakerConfig{Cooldown: time.Minute}, 3, time.Minute}, // Max below Cooldown counts as Cooldown
		{BreakerConfig{Cooldown: 3 * time.Second, MaxCooldown: 10 * time.Second}, 2, 6 * time.Second},
		{BreakerConfig{Cooldown: 3 * time.Second, MaxCooldown: 10 * time.Second}, 3, 10 * time.Second},
		{BreakerConfig{Cooldown: time.Hour, MaxCooldown: math.MaxInt64}, 64, math.MaxInt64}, // no overflow
		{BreakerConfig{Cooldown: time.Hour, MaxCooldown: math.MaxInt64}, 3, 4 * time.Hour},
	}
	for _, tt := range tests {
		if got := tt.cfg.withDefaults().cooldown(tt.n); got != tt.want {
			t.Errorf("%+v after %d failures: cooldown %v, want %v", tt.cfg, tt.n, got, tt.want)
		}
	}
}

func TestBreakerSingleTrialConcurrent(t *testing.T) {
	b := NewBreaker(BreakerConfig{})
	b.Failure("k", t0)
	now := t0.Add(time.Second)
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			if b.Allow("k", now) {
				allowed.Add(1)
			}
			b.Open("k", now)
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 1 {
		t.Fatalf("%d trials allowed, want 1", n)
	}
}
