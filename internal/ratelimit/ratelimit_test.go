package ratelimit

import (
	"testing"
	"time"
)

func TestBucketSteps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms   int
		want bool
	}
	for _, tc := range []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{"unlimited", 0, 0, []step{{0, true}, {0, true}, {0, true}, {0, true}}},
		{"rate 2 burst default 2", 2, 0, []step{{0, true}, {0, true}, {0, false}, {499, false}, {500, true}, {500, false}, {1000, true}, {1000, false}}},
		{"rate 1 burst 3", 1, 3, []step{{0, true}, {0, true}, {0, true}, {0, false}, {999, false}, {1000, true}, {1000, false}, {10000, true}, {10000, true}, {10000, true}, {10000, false}}},
		{"rate 10 burst 1", 10, 1, []step{{0, true}, {50, false}, {100, true}, {150, false}, {200, true}}},
		{"fractional rate 0.5", 0.5, 1, []step{{0, true}, {1000, false}, {1999, false}, {2000, true}}},
		{"clock going back earns nothing", 1, 1, []step{{5000, true}, {1000, false}, {5999, false}, {6000, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBucket(tc.rate, tc.burst)
			for i, s := range tc.steps {
				if got := b.Allow(at(s.ms)); got != s.want {
					t.Fatalf("step %d (t=%dms): Allow = %v, want %v", i, s.ms, got, s.want)
				}
			}
		})
	}
}

func TestBucketSet(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBucket(0, 0)
	b.Set(1, 2) // unlimited -> limited starts full
	for i, want := range []bool{true, true, false} {
		if got := b.Allow(t0); got != want {
			t.Fatalf("after Set(1,2) #%d: %v, want %v", i, got, want)
		}
	}
	b.Set(0, 0)
	for i := range 100 {
		if !b.Allow(t0) {
			t.Fatalf("after Set(0,0) #%d refused", i)
		}
	}
	b = NewBucket(1, 10)
	b.Set(1, 1) // shrinking the burst drops the surplus tokens
	if !b.Allow(t0) || b.Allow(t0) {
		t.Fatal("Set(1,1) kept more than one token")
	}
}

func TestEvery(t *testing.T) {
	t0 := time.Unix(1000, 0)
	e := NewEvery(time.Second)
	type step struct {
		ms         int
		ok         bool
		suppressed uint64
	}
	for i, s := range []step{{0, true, 0}, {1, false, 0}, {999, false, 0}, {1000, true, 2}, {1500, false, 0}, {3000, true, 1}, {5000, true, 0}} {
		ok, n := e.Allow(t0.Add(time.Duration(s.ms) * time.Millisecond))
		if ok != s.ok || n != s.suppressed {
			t.Fatalf("step %d (t=%dms): Allow = %v,%d, want %v,%d", i, s.ms, ok, n, s.ok, s.suppressed)
		}
	}
}
