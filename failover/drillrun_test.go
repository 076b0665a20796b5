package failover

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The DrillRun tests run in a synctest bubble: time is virtual, so a 20 s
// drill takes milliseconds, and every instant below is exact. The bubble
// also fails a test that leaves a goroutine behind.

// world says what a probe at off (from the bubble's start) gets.
type world func(ctx context.Context, off time.Duration) (Endpoint, error)

var (
	siteA = Endpoint{Node: "a1", Site: "a"}
	siteB = Endpoint{Node: "b1", Site: "b"}
)

// served is a probe served by ep after probeLatency.
func served(ctx context.Context, ep Endpoint) (Endpoint, error) {
	return answer(ctx, probeLatency, ep, nil)
}

// answer returns ep, err after d, or ctx.Err() if ctx ends first.
func answer(ctx context.Context, d time.Duration, ep Endpoint, err error) (Endpoint, error) {
	select {
	case <-ctx.Done():
		return Endpoint{}, ctx.Err()
	case <-time.After(d):
		return ep, err
	}
}

const probeLatency = 2 * time.Millisecond

// The drill below starts at 550 ms (DrillBaseline) and is restored at
// 20.55 s; probes start at 0, 100, 200 ms, ...
const (
	cutAt     = DrillBaseline
	restoreAt = cutAt + 20*time.Second
)

// failingOverWorld: site a serves, is cut off at cutAt, b serves from
// cutAt+300ms, and a serves again from restoreAt+back.
func failingOverWorld(back time.Duration) world {
	return func(ctx context.Context, off time.Duration) (Endpoint, error) {
		switch {
		case off < cutAt:
			return served(ctx, siteA)
		case off < cutAt+300*time.Millisecond:
			return answer(ctx, probeLatency, Endpoint{}, errors.New("connection refused"))
		case off < restoreAt+back:
			return served(ctx, siteB)
		default:
			return served(ctx, siteA)
		}
	}
}

// recorder is a DrillRun's fake node: it answers probes from a world and
// records what the runner asked of it.
type recorder struct {
	t0    time.Time
	world world

	mu       sync.Mutex
	cuts     []time.Duration // offsets of Cut calls
	cancels  int
	calls    map[string][]time.Duration // probe start offsets per service
	rrs      map[string][]uint64
	inflight atomic.Int64
	cutErr   error
}

func newRecorder(w world) *recorder {
	return &recorder{t0: time.Now(), world: w, calls: map[string][]time.Duration{}, rrs: map[string][]uint64{}}
}

func (rc *recorder) run(services ...string) *DrillRun {
	return &DrillRun{
		Site: "a", Services: services, Duration: 20 * time.Second,
		Probe: func(ctx context.Context, service string, rr uint64) (Endpoint, error) {
			rc.inflight.Add(1)
			defer rc.inflight.Add(-1)
			off := time.Since(rc.t0)
			rc.mu.Lock()
			rc.calls[service] = append(rc.calls[service], off)
			rc.rrs[service] = append(rc.rrs[service], rr)
			rc.mu.Unlock()
			return rc.world(ctx, off)
		},
		Cut: func(start time.Time) error {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			rc.cuts = append(rc.cuts, start.Sub(rc.t0))
			return rc.cutErr
		},
		Cancel: func() {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			rc.cancels++
		},
	}
}

func TestDrillRunSteps(t *testing.T) {
	hang := func(ctx context.Context, off time.Duration) (Endpoint, error) {
		if off >= cutAt && off < restoreAt {
			<-ctx.Done() // the cut site's packets vanish: the probe times out
			return Endpoint{}, ctx.Err()
		}
		return served(ctx, siteA)
	}
	tests := []struct {
		name  string
		world world

		probes, failed       int // per service
		rto, failback        int64
		before, during, afer string
		took                 time.Duration // when Run returned
	}{
		{
			// Probes at 600, 700, 800 ms fail; the one at 900 ms is served by
			// b and completes at 902 ms: RTO 352 ms. The probe at 20.7 s is
			// served by a again (failback 152 ms); the tail check at 20.75 s
			// sees it and ends the drill: probes 0..20.7 s, 208 of them.
			name: "fails over and back", world: failingOverWorld(150 * time.Millisecond),
			probes: 208, failed: 3, rto: 352, failback: 152,
			before: "a1", during: "b1", afer: "a1", took: restoreAt + 200*time.Millisecond,
		},
		{
			name: "failback on the first probe after the restore", world: failingOverWorld(0),
			probes: 207, failed: 3, rto: 352, failback: 52,
			before: "a1", during: "b1", afer: "a1", took: restoreAt + 100*time.Millisecond,
		},
		{
			// Never served by a again: the runner waits the whole tail
			// (15 s after the restore) and then reports no failback.
			name: "never fails back", world: failingOverWorld(time.Hour),
			probes: 356, failed: 3, rto: 352, failback: -1,
			before: "a1", during: "b1", afer: "b1", took: restoreAt + DrillMaxTail,
		},
		{
			// Every probe during the cut hangs until DrillProbeTimeout; the
			// site serves again after the restore. Probes started during
			// the cut up to 17.6 s (171) time out before the drill ends;
			// the later ones are still running then and are not counted.
			name: "no failover, probes time out", world: hang,
			probes: 178, failed: 171, rto: -1, failback: 52,
			before: "a1", during: "", afer: "a1", took: restoreAt + 100*time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rc := newRecorder(tt.world)
				run := rc.run("db", "web")
				rep, err := run.Run(t.Context())
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if took := time.Since(rc.t0); took != tt.took {
					t.Errorf("Run returned after %v, want %v", took, tt.took)
				}
				if n := rc.inflight.Load(); n != 0 {
					t.Errorf("%d probes still running after Run returned", n)
				}
				if !slices.Equal(rc.cuts, []time.Duration{cutAt}) || rc.cancels != 0 {
					t.Errorf("cuts at %v, %d cancels; want one cut at %v, none", rc.cuts, rc.cancels, cutAt)
				}
				if rep.Site != "a" || rep.DurationMS != 20000 || len(rep.Services) != 2 {
					t.Fatalf("report %+v: want site a, 20000 ms, 2 services", rep)
				}
				for _, s := range rep.Services {
					if s.Probes != tt.probes || s.Failed != tt.failed || s.RTOMS != tt.rto || s.FailbackMS != tt.failback {
						t.Errorf("%s: probes %d failed %d rto %d failback %d; want %d %d %d %d",
							s.Name, s.Probes, s.Failed, s.RTOMS, s.FailbackMS, tt.probes, tt.failed, tt.rto, tt.failback)
					}
					if s.Before != tt.before || s.During != tt.during || s.After != tt.afer {
						t.Errorf("%s: %s → %s → %s, want %s → %s → %s", s.Name, s.Before, s.During, s.After, tt.before, tt.during, tt.afer)
					}
				}
			})
		})
	}
}

// TestDrillRunCadence: one probe per service at once and every 100 ms,
// each with the next round-robin counter.
func TestDrillRunCadence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := newRecorder(failingOverWorld(0))
		if _, err := rc.run("db", "web").Run(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"db", "web"} {
			calls, rrs := rc.calls[s], rc.rrs[s]
			if len(calls) < 200 {
				t.Fatalf("%s: %d probes", s, len(calls))
			}
			for i, off := range calls {
				if want := time.Duration(i) * DrillProbeEvery; off != want || rrs[i] != uint64(i+1) {
					t.Fatalf("%s probe %d: at %v rr %d, want at %v rr %d", s, i, off, rrs[i], want, i+1)
				}
			}
		}
	})
}

// TestDrillRunSlowProbes: probes that take longer than the cadence do not
// delay the next ones (each runs on its own).
func TestDrillRunSlowProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := newRecorder(func(ctx context.Context, off time.Duration) (Endpoint, error) {
			return answer(ctx, time.Second, siteA, nil)
		})
		run := rc.run("db")
		run.Duration = time.Second
		rep, err := run.Run(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// The cut ends at 1.55 s; the first probe started after it (at
		// 1.6 s) completes at 2.6 s, and the tail check at 2.65 s sees it.
		// (The failback is measured from completions: the probe started at
		// 0.6 s completes 50 ms after the restore.)
		if took := time.Since(rc.t0); took != 2650*time.Millisecond {
			t.Errorf("took %v, want 2.65s", took)
		}
		s := rep.Services[0]
		if s.FailbackMS != 50 || s.LatencyP50MS != 1000 {
			t.Errorf("failback %d ms, p50 %v ms; want 50, 1000", s.FailbackMS, s.LatencyP50MS)
		}
		if calls := rc.calls["db"]; len(calls) != 27 || calls[26] != 2600*time.Millisecond {
			t.Errorf("probes at %v, want 27 up to 2.6s", calls)
		}
	})
}

func TestDrillRunCancel(t *testing.T) {
	tests := []struct {
		name     string
		cancelAt time.Duration
		cuts     int
		cancels  int
	}{
		{name: "during the baseline", cancelAt: 300 * time.Millisecond, cuts: 0, cancels: 0},
		{name: "during the cut", cancelAt: 5 * time.Second, cuts: 1, cancels: 1},
		{name: "during the tail", cancelAt: restoreAt + time.Second, cuts: 1, cancels: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rc := newRecorder(failingOverWorld(time.Hour))
				ctx, cancel := context.WithCancel(t.Context())
				time.AfterFunc(tt.cancelAt, cancel)
				rep, err := rc.run("db").Run(ctx)
				took := time.Since(rc.t0)
				if tt.name == "during the tail" {
					// Ending the tail early still reports what was seen.
					if err != nil || rep.DurationMS != 20000 || rep.Services[0].FailbackMS != -1 {
						t.Fatalf("Run: %+v, %v; want a report without failback", rep, err)
					}
				} else if !errors.Is(err, context.Canceled) || rep.Site != "" {
					t.Fatalf("Run: %+v, %v; want no report, context.Canceled", rep, err)
				}
				if took != tt.cancelAt {
					t.Errorf("Run returned after %v, want %v", took, tt.cancelAt)
				}
				if len(rc.cuts) != tt.cuts || rc.cancels != tt.cancels {
					t.Errorf("%d cuts, %d cancels; want %d, %d", len(rc.cuts), rc.cancels, tt.cuts, tt.cancels)
				}
				if n := rc.inflight.Load(); n != 0 {
					t.Errorf("%d probes still running after Run returned", n)
				}
			})
		})
	}
}

// TestDrillRunCutFails: a drill order that reaches nobody ends the drill
// before anything was cut; nothing is cancelled.
func TestDrillRunCutFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := newRecorder(failingOverWorld(0))
		rc.cutErr = errors.New("drill order reached no node")
		run := rc.run("db")
		_, err := run.Run(t.Context())
		if !errors.Is(err, rc.cutErr) {
			t.Fatalf("Run: %v, want the Cut error", err)
		}
		if took := time.Since(rc.t0); took != cutAt || rc.cancels != 0 {
			t.Errorf("returned after %v with %d cancels; want %v, 0", took, rc.cancels, cutAt)
		}
		if _, ok := run.Snapshot(); ok {
			t.Error("Snapshot of a drill whose cut failed reports a drill")
		}
	})
}

// TestDrillRunSnapshot: the live report while the drill runs, and from
// within Cut (where the node registers it for the status page).
func TestDrillRunSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := newRecorder(failingOverWorld(0))
		run := rc.run("db")
		if _, ok := run.Snapshot(); ok {
			t.Error("Snapshot before Run reports a drill")
		}
		var inCut bool
		cut := run.Cut
		run.Cut = func(start time.Time) error {
			_, inCut = run.Snapshot()
			return cut(start)
		}
		snap := make(chan Report, 1)
		time.AfterFunc(10*time.Second, func() { rep, _ := run.Snapshot(); snap <- rep })
		if _, err := run.Run(t.Context()); err != nil {
			t.Fatal(err)
		}
		mid := <-snap
		if !inCut {
			t.Error("Snapshot from within Cut reports no drill")
		}
		s := mid.Services[0]
		// At 10 s: probes at 0..9.9 s (those due at 10 s not yet done).
		if mid.DurationMS != 20000 || s.Probes != 100 || s.RTOMS != 352 || s.FailbackMS != -1 {
			t.Errorf("snapshot at 10s: %+v", mid)
		}
	})
}

// fastClock runs 10 times faster than the clock it is built on.
type fastClock struct{ t0 time.Time }

func (c fastClock) Now() time.Time { return c.t0.Add(10 * time.Since(c.t0)) }
func (c fastClock) After(d time.Duration) <-chan time.Time {
	return time.After(d / 10)
}

// TestDrillRunClock: the runner keeps time only by its Clock.
func TestDrillRunClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		rc := newRecorder(func(ctx context.Context, off time.Duration) (Endpoint, error) {
			return siteA, nil // served from a throughout, at once
		})
		run := rc.run("db")
		run.Clock = fastClock{t0}
		rep, err := run.Run(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// 550 ms baseline + 20 s + 100 ms to the tail check that sees the
		// probe of 20.6 s: 2.065 s of the underlying clock, 20.65 s of the
		// drill's.
		if took := time.Since(t0); took != 2065*time.Millisecond {
			t.Errorf("took %v on the underlying clock, want 2.065s", took)
		}
		s := rep.Services[0]
		if rep.DurationMS != 20000 || s.Probes != 207 || s.FailbackMS != 50 {
			t.Errorf("report %+v: want 20000 ms, 207 probes, failback 50 ms", rep)
		}
	})
}

func TestDrillRunBadInput(t *testing.T) {
	nop := func(ctx context.Context, s string, rr uint64) (Endpoint, error) { return Endpoint{}, nil }
	ok := func() *DrillRun {
		return &DrillRun{Site: "a", Services: []string{"db"}, Duration: time.Second, Probe: nop,
			Cut: func(time.Time) error { return nil }, Cancel: func() {}}
	}
	tests := []struct {
		name string
		edit func(*DrillRun)
		want string
	}{
		{"no site", func(r *DrillRun) { r.Site = "" }, "needs a site"},
		{"no service", func(r *DrillRun) { r.Services = nil }, "needs a service"},
		{"zero duration", func(r *DrillRun) { r.Duration = 0 }, "duration 0s not allowed"},
		{"too long", func(r *DrillRun) { r.Duration = MaxDrillDuration + time.Millisecond }, "not allowed"},
		{"no probe", func(r *DrillRun) { r.Probe = nil }, "needs Probe"},
	}
	for _, tt := range tests {
		r := ok()
		tt.edit(r)
		_, err := r.Run(t.Context())
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "failover: ") {
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

func TestFailedBack(t *testing.T) {
	restore := time.Unix(1000, 0)
	ok := func(site string, at time.Duration) Probe { return Probe{At: restore.Add(at), OK: true, Site: site} }
	bad := func(at time.Duration) Probe { return Probe{At: restore.Add(at)} }
	tests := []struct {
		name   string
		probes map[string][]Probe
		want   bool
	}{
		{"no probes", nil, false},
		{"served by the site before the restore only", map[string][]Probe{"db": {ok("a", -time.Millisecond)}, "web": {ok("a", time.Second)}}, false},
		{"a probe started at the restore is not after it", map[string][]Probe{"db": {ok("a", 0)}, "web": {ok("a", 1)}}, false},
		{"served by another site", map[string][]Probe{"db": {ok("b", time.Second)}, "web": {ok("a", time.Second)}}, false},
		{"failed probe", map[string][]Probe{"db": {bad(time.Second)}, "web": {ok("a", time.Second)}}, false},
		{"one service missing", map[string][]Probe{"db": {ok("a", time.Second)}}, false},
		{"every service back", map[string][]Probe{"db": {bad(1), ok("a", 2)}, "web": {ok("b", 1), ok("a", 5)}}, true},
	}
	for _, tt := range tests {
		if got := FailedBack(tt.probes, []string{"db", "web"}, "a", restore); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
