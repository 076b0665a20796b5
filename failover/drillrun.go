package failover

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Drill timing (docs/formats.md).
const (
	// DefaultDrillDuration is how long a site is cut off when the request
	// names no duration.
	DefaultDrillDuration = 20 * time.Second
	// DrillProbeEvery is the probe cadence: one new connection per service
	// this often, before, during and after the cut.
	DrillProbeEvery = 100 * time.Millisecond
	// DrillProbeTimeout bounds one probe.
	DrillProbeTimeout = 3 * time.Second
	// DrillBaseline is how long the services are probed before the cut,
	// for the report's "before"; it is off the probe tick on purpose.
	DrillBaseline = 550 * time.Millisecond
	// DrillMaxTail is how long after the restore the runner waits for
	// every service to be served by the drilled site again.
	DrillMaxTail = 15 * time.Second
)

// Clock is the time source of a DrillRun: it reads the time and waits
// only through it (a probe's timeout is a context deadline, on the system
// clock).
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed (at once for
	// d <= 0), like time.After.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the Clock of package time.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// DrillRun is one failover drill as seen from the node that runs it
// (docs/formats.md): it probes Services every DrillProbeEvery through Probe,
// calls Cut after DrillBaseline, waits Duration, then keeps probing until
// every service is served by Site again (or DrillMaxTail passed) and
// summarizes the probes. The node supplies the effects (sending the drill
// order, dialling through the import's selection path); DrillRun holds the
// sequence and the timing, and reads time only through Clock.
//
// Fill in the exported fields, then call Run once. Snapshot may be called
// concurrently with Run.
type DrillRun struct {
	Site     string        // the site that is cut off
	Services []string      // the services probed (the node's imports)
	Duration time.Duration // how long the cut lasts; 1ms..MaxDrillDuration
	Clock    Clock         // nil: SystemClock

	// Probe opens one connection to service through the same selection
	// and failover path a client connection takes, closes it, and returns
	// the endpoint that served it. rr is the probe's round-robin counter
	// (1, 2, ... per service); ctx carries DrillProbeTimeout and ends when
	// the drill does, after which the outcome is ignored. Required.
	Probe func(ctx context.Context, service string, rr uint64) (Endpoint, error)
	// Cut starts the black hole of Site (sends the drill order); start is
	// the drill's start time. An error ends Run before anything was cut.
	// Required.
	Cut func(start time.Time) error
	// Cancel ends the cut early, when ctx ends while Site is cut off. It
	// is called at most once, and never after Cut failed. Required.
	Cancel func()

	mu      sync.Mutex
	probes  map[string][]Probe // guarded by mu
	started time.Time          // guarded by mu; the start passed to Cut, once it succeeded
}

// Run runs the drill and returns its report. It returns ctx.Err() if ctx
// ends first (after calling Cancel if the cut had begun), and Cut's error
// if that fails. When Run returns, every probe it started has returned.
func (r *DrillRun) Run(ctx context.Context) (Report, error) {
	if err := r.check(); err != nil {
		return Report{}, err
	}
	clk := r.clock()
	pctx, stopProbes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopProbes()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.probeLoop(pctx, clk, &wg)
	}()

	if !sleep(ctx, clk, DrillBaseline) {
		return Report{}, ctx.Err()
	}
	start := clk.Now()
	r.setStarted(start) // before Cut, so that Snapshot works from within it
	if err := r.Cut(start); err != nil {
		r.setStarted(time.Time{})
		return Report{}, err
	}
	if !sleep(ctx, clk, r.Duration) {
		r.Cancel()
		return Report{}, ctx.Err()
	}

	// Wait for every service to be served by the drilled site again.
	restore := start.Add(r.Duration)
	tailEnd := clk.Now().Add(DrillMaxTail)
	for clk.Now().Before(tailEnd) && !FailedBack(r.results(), r.Services, r.Site, restore) {
		if !sleep(ctx, clk, DrillProbeEvery) {
			break
		}
	}
	stopProbes()
	wg.Wait()
	return Summarize(r.Site, start, restore, r.results()), nil
}

func (r *DrillRun) setStarted(t time.Time) {
	r.mu.Lock()
	r.started = t
	r.mu.Unlock()
}

func (r *DrillRun) check() error {
	switch {
	case r.Site == "":
		return errors.New("failover: drill needs a site")
	case len(r.Services) == 0:
		return errors.New("failover: drill needs a service to probe")
	case r.Duration <= 0 || r.Duration > MaxDrillDuration:
		return fmt.Errorf("failover: drill duration %v not allowed: use 1ms..%v", r.Duration, MaxDrillDuration)
	case r.Probe == nil || r.Cut == nil || r.Cancel == nil:
		return errors.New("failover: drill needs Probe, Cut and Cancel")
	}
	return nil
}

func (r *DrillRun) clock() Clock {
	if r.Clock == nil {
		return SystemClock{}
	}
	return r.Clock
}

// Snapshot returns the report of the probes so far, as if the drill had
// been restored on schedule (it works from within Cut); before Cut is
// called, or once it failed, it is the zero Report and false.
func (r *DrillRun) Snapshot() (Report, bool) {
	r.mu.Lock()
	start := r.started
	r.mu.Unlock()
	if start.IsZero() {
		return Report{}, false
	}
	return Summarize(r.Site, start, start.Add(r.Duration), r.results()), true
}

// probeLoop starts one probe per service at once and then every
// DrillProbeEvery until ctx ends. Like a time.Ticker it skips ticks it is
// too late for rather than bunching probes.
func (r *DrillRun) probeLoop(ctx context.Context, clk Clock, wg *sync.WaitGroup) {
	next := clk.Now()
	for rr := uint64(1); ; rr++ {
		for _, s := range r.Services {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.probe(ctx, clk, s, rr)
			}()
		}
		next = next.Add(DrillProbeEvery)
		if now := clk.Now(); next.Before(now) {
			next = now
		}
		if !sleep(ctx, clk, next.Sub(clk.Now())) {
			return
		}
	}
}

// probe runs one probe and records it, unless the drill ended meanwhile.
func (r *DrillRun) probe(ctx context.Context, clk Clock, service string, rr uint64) {
	at := clk.Now()
	pctx, cancel := context.WithTimeout(ctx, DrillProbeTimeout)
	defer cancel()
	ep, err := r.Probe(pctx, service, rr)
	if ctx.Err() != nil {
		return // the drill is over; this probe says nothing
	}
	pb := Probe{At: at, Latency: clk.Now().Sub(at), OK: err == nil}
	if err != nil {
		pb.Err = err.Error()
	} else {
		pb.Node, pb.Site = ep.Node, ep.Site
	}
	r.mu.Lock()
	if r.probes == nil {
		r.probes = make(map[string][]Probe)
	}
	r.probes[service] = append(r.probes[service], pb)
	r.mu.Unlock()
}

// results returns a copy of the probes so far.
func (r *DrillRun) results() map[string][]Probe {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]Probe, len(r.probes))
	for k, v := range r.probes {
		out[k] = append([]Probe(nil), v...)
	}
	return out
}

// FailedBack reports whether every one of services has an OK probe
// served from site that started after restore.
func FailedBack(probes map[string][]Probe, services []string, site string, restore time.Time) bool {
	for _, s := range services {
		ok := false
		for _, pb := range probes[s] {
			if pb.OK && pb.Site == site && pb.At.After(restore) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// sleep waits d on clk; false if ctx ended first.
func sleep(ctx context.Context, clk Clock, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-clk.After(d):
		return true
	}
}
