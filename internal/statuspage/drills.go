package statuspage

import (
	"sync"
	"time"

	"github.com/meshd/meshd/failover"
)

// DefaultRingSize is how many finished drills a node keeps for the page.
const DefaultRingSize = 10

// Drill is one drill as the page shows it: the docs/formats.md report (with its
// per-service timelines) and when the black hole began.
type Drill struct {
	Started time.Time `json:"started"`
	Running bool      `json:"running"` // still going: the report so far
	failover.Report
}

// Drills is the /api/drills document.
type Drills struct {
	Running *Drill  `json:"running"` // the drill in progress, or null
	Drills  []Drill `json:"drills"`  // finished drills, newest first; [] rather than null
}

// Ring keeps the last finished drills, and the one in progress (the
// latest started, if several run at once). Its methods are safe for
// concurrent use.
type Ring struct {
	mu   sync.Mutex
	max  int
	done []Drill // guarded by mu; oldest first, at most max
	live *Live   // guarded by mu; the running drill, or nil
}

// Live is a running drill, from Ring.Start.
type Live struct {
	started time.Time
	report  func() failover.Report
}

// NewRing returns a ring that keeps the last n drills (n < 1: DefaultRingSize).
func NewRing(n int) *Ring {
	if n < 1 {
		n = DefaultRingSize
	}
	return &Ring{max: n}
}

// Start marks a drill as running since started; report returns its report
// so far (it is called for every /api/drills request until the drill is
// finished or aborted).
func (r *Ring) Start(started time.Time, report func() failover.Report) *Live {
	l := &Live{started: started, report: report}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = l
	return l
}

// Finish records the finished drill l with its report; it is no longer
// running.
func (r *Ring) Finish(l *Live, rep failover.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live == l {
		r.live = nil
	}
	r.done = append(r.done, Drill{Started: l.started, Report: rep})
	if len(r.done) > r.max {
		r.done = append(r.done[:0], r.done[len(r.done)-r.max:]...)
	}
}

// Abort ends the running drill l without recording it; after Finish it
// does nothing.
func (r *Ring) Abort(l *Live) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live == l {
		r.live = nil
	}
}

// Snapshot returns the running drill (if any) and the finished ones,
// newest first.
func (r *Ring) Snapshot() Drills {
	r.mu.Lock()
	live := r.live
	d := Drills{Drills: make([]Drill, 0, len(r.done))}
	for i := len(r.done) - 1; i >= 0; i-- {
		d.Drills = append(d.Drills, r.done[i])
	}
	r.mu.Unlock()
	if live != nil {
		// Outside the lock: the report is summarized from the probes so far.
		d.Running = &Drill{Started: live.started, Running: true, Report: live.report()}
	}
	return d
}
