package statuspage

import (
	"sync"
	"time"

	"github.com/meshd/meshd/failover"
)

// DefaultRingSize is how many finished drills a node keeps for the page.
const DefaultRingSize = 10

// Drill is one drill as the page shows it: the SPEC §6 report (with its
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

// Ring keeps the last finished drills, and the one in progress. Its
// methods are safe for concurrent use.
type Ring struct {
	mu   sync.Mutex
	max  int
	done []Drill                // guarded by mu; oldest first, at most max
	live func() failover.Report // guarded by mu; the running drill's report so far
	at   time.Time              // guarded by mu; the running drill's start
}

// NewRing returns a ring that keeps the last n drills (n < 1: DefaultRingSize).
func NewRing(n int) *Ring {
	if n < 1 {
		n = DefaultRingSize
	}
	return &Ring{max: n}
}

// Start marks a drill as running since started; report returns its report
// so far (it is called for every /api/drills request until Finish).
func (r *Ring) Start(started time.Time, report func() failover.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live, r.at = report, started
}

// Finish records a finished drill (and ends the running one).
func (r *Ring) Finish(started time.Time, rep failover.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = nil
	r.done = append(r.done, Drill{Started: started, Report: rep})
	if len(r.done) > r.max {
		r.done = append(r.done[:0], r.done[len(r.done)-r.max:]...)
	}
}

// Abort ends the running drill without recording it.
func (r *Ring) Abort() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = nil
}

// Snapshot returns the running drill (if any) and the finished ones,
// newest first.
func (r *Ring) Snapshot() Drills {
	r.mu.Lock()
	live, at := r.live, r.at
	d := Drills{Drills: make([]Drill, 0, len(r.done))}
	for i := len(r.done) - 1; i >= 0; i-- {
		d.Drills = append(d.Drills, r.done[i])
	}
	r.mu.Unlock()
	if live != nil {
		// Outside the lock: the report is summarized from the probes so far.
		d.Running = &Drill{Started: at, Running: true, Report: live()}
	}
	return d
}
