package procs

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestShouldNarrowSteps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const idle = 10 * time.Second
	for _, c := range []struct {
		name     string
		active   int64
		lastBusy time.Time
		now      time.Time
		want     bool
	}{
		{"a connection is active", 1, t0, t0.Add(time.Hour), false},
		{"the last one ended just now", 0, t0, t0, false},
		{"idle for less than idleAfter", 0, t0, t0.Add(idle - time.Millisecond), false},
		{"idle for idleAfter", 0, t0, t0.Add(idle), true},
		{"idle for long", 0, t0, t0.Add(time.Hour), true},
		{"a clock step back", 0, t0, t0.Add(-time.Second), false},
	} {
		if got := ShouldNarrow(c.active, c.lastBusy, c.now, idle); got != c.want {
			t.Errorf("%s: ShouldNarrow = %v, want %v", c.name, got, c.want)
		}
	}
}

// fake counts the switches of a governor instead of making them.
type fake struct {
	mu             sync.Mutex
	narrows, wides int
	narrow         bool // the scheduler as the fake runtime would have it
}

func newFake(idle time.Duration) (*Governor, *fake) {
	f := &fake{}
	g := &Governor{}
	g.enable(idle,
		func() { f.mu.Lock(); f.narrows++; f.narrow = true; f.mu.Unlock() },
		func() { f.mu.Lock(); f.wides++; f.narrow = false; f.mu.Unlock() })
	return g, f
}

func (f *fake) isNarrow() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.narrow
}

func (f *fake) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.narrows, f.wides
}

func TestGovernorSteps(t *testing.T) {
	g, f := newFake(time.Hour)
	now := time.Now()
	g.Tick(now)
	if g.narrowed.Load() {
		t.Fatal("narrowed right after Enable")
	}
	end := g.Begin()
	g.Tick(now.Add(2 * time.Hour))
	if n, _ := f.counts(); n != 0 || g.narrowed.Load() {
		t.Fatal("narrowed while a connection was active")
	}
	end()
	end() // twice is once
	if g.active.Load() != 0 {
		t.Fatalf("active = %d after end, twice", g.active.Load())
	}
	g.Tick(time.Now().Add(30 * time.Minute))
	if g.narrowed.Load() {
		t.Fatal("narrowed before idleAfter since the last connection ended")
	}
	g.Tick(time.Now().Add(2 * time.Hour))
	if n, _ := f.counts(); n != 1 || !g.narrowed.Load() {
		t.Fatalf("not narrowed after idleAfter: narrows %d", n)
	}
	g.Tick(time.Now().Add(3 * time.Hour)) // already narrow: no second switch
	end = g.Begin()
	if n, w := f.counts(); n != 1 || w != 1 || g.narrowed.Load() {
		t.Fatalf("Begin while narrowed: narrows %d, widens %d, narrowed %v; want 1, 1, false", n, w, g.narrowed.Load())
	}
	end()
	if (&Governor{}).Begin() == nil {
		t.Fatal("an off governor's Begin returned nil")
	}
}

// TestGovernorNeverNarrowWhileActive: connections beginning while Tick
// decides never leave the scheduler narrowed with a connection active.
func TestGovernorNeverNarrowWhileActive(t *testing.T) {
	g, f := newFake(0)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				g.Tick(time.Now())
			}
		}
	}()
	for range 2000 {
		end := g.Begin()
		if f.isNarrow() {
			end()
			close(stop)
			wg.Wait()
			t.Fatal("narrowed while a connection was active")
		}
		end()
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	if n, _ := f.counts(); n == 0 {
		t.Fatal("Tick never narrowed between connections: the test tested nothing")
	}
}

func TestEnableRespectsTheEnvironment(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if Enable(time.Second) {
		t.Fatal("Enable with GOMAXPROCS set in the environment turned the governor on")
	}
}

func TestIdleAfterSteps(t *testing.T) {
	for _, c := range []struct {
		v      string
		want   time.Duration
		wantOn bool
	}{
		{"", DefaultIdleAfter, true},
		{"1s", time.Second, true},
		{"250ms", 250 * time.Millisecond, true},
		{"off", 0, false},
		{"0s", DefaultIdleAfter, true},
		{"-1s", DefaultIdleAfter, true},
		{"soon", DefaultIdleAfter, true},
	} {
		if d, on := IdleAfter(c.v); d != c.want || on != c.wantOn {
			t.Errorf("IdleAfter(%q) = %v, %v; want %v, %v", c.v, d, on, c.want, c.wantOn)
		}
	}
}

func TestEnableForJoinOffForARelay(t *testing.T) {
	if EnableForJoin(true) {
		t.Fatal("EnableForJoin turned the governor on for a relay node")
	}
	t.Setenv("MESHD_DEBUG_PROCS_IDLE", "off")
	if EnableForJoin(false) {
		t.Fatal("EnableForJoin turned the governor on with MESHD_DEBUG_PROCS_IDLE=off")
	}
}
