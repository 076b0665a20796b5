// Package procs runs the Go scheduler with one P while the process is
// idle, and with its default width again as soon as work arrives.
//
// On an idle node nearly all CPU is the cost of waking up: with two or
// more Ps, a goroutine made runnable (a packet, a timer) also wakes a
// second thread to look for more work, which finds none and parks again.
// With one P there is no second thread to wake. Measured at 100 nodes
// (`meshd bench --only scale --nodes 100`, README "Performance"), one P
// took a fifth off an idle node's CPU. So a node that has carried no
// connection for a while narrows to one P, and widens as soon as a
// connection begins (Begin), before it is served: runtime.GOMAXPROCS, a
// stop of the world of some tens of microseconds, once per idle spell.
//
// It stays off unless Enable is called (meshd join does, a node that runs
// a relay does not: relayed traffic is no connection of its own), when
// GOMAXPROCS is set in the environment (the operator chose), and when the
// default is already one P.
package procs

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleAfter is how long a node carries no connection before its
// scheduler narrows to one P.
const DefaultIdleAfter = 10 * time.Second

// IdleAfter reads v, the value of MESHD_DEBUG_PROCS_IDLE (a test and
// measurement knob): a positive duration replaces DefaultIdleAfter, "off"
// keeps the default width (on is false), anything else is the default.
func IdleAfter(v string) (d time.Duration, on bool) {
	if v == "off" {
		return 0, false
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d, true
	}
	return DefaultIdleAfter, true
}

// EnableForJoin turns the process's governor on for a `meshd join` node,
// unless it runs a relay (relayed traffic is no connection of its own)
// or MESHD_DEBUG_PROCS_IDLE is "off"; it reports whether it is on.
func EnableForJoin(relay bool) bool {
	d, on := IdleAfter(os.Getenv("MESHD_DEBUG_PROCS_IDLE"))
	return on && !relay && Enable(d)
}

// Governor narrows and widens the scheduler. The zero value is off.
type Governor struct {
	on        atomic.Bool
	idleAfter time.Duration
	active    atomic.Int64 // connections begun and not ended
	lastBusy  atomic.Int64 // unix nanoseconds a connection last began or ended
	narrowed  atomic.Bool

	mu      sync.Mutex // serializes switches
	narrow  func()     // to one P
	restore func()     // to the default
}

// std is the process's governor: GOMAXPROCS is the process's.
var std Governor

// Enable turns the process's governor on: it narrows once no connection
// has been carried for idleAfter. It reports whether it is on (see the
// package doc for when it stays off).
func Enable(idleAfter time.Duration) bool {
	if os.Getenv("GOMAXPROCS") != "" || runtime.GOMAXPROCS(0) <= 1 {
		return false
	}
	std.enable(idleAfter, func() { runtime.GOMAXPROCS(1) }, func() { runtime.SetDefaultGOMAXPROCS() })
	return true
}

func (g *Governor) enable(idleAfter time.Duration, narrow, restore func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.idleAfter, g.narrow, g.restore = idleAfter, narrow, restore
	g.lastBusy.Store(time.Now().UnixNano())
	g.on.Store(true)
}

// Begin records a connection beginning, widening the scheduler first if
// it is narrowed; call the returned func once when it ends.
func Begin() (end func()) { return std.Begin() }

// Tick narrows the scheduler if the process has been idle long enough at
// now; call it from a periodic loop.
func Tick(now time.Time) { std.Tick(now) }

// Narrowed reports whether the scheduler runs on one P now.
func Narrowed() bool { return std.narrowed.Load() }

// Begin: see the package-level Begin.
func (g *Governor) Begin() (end func()) {
	if !g.on.Load() {
		return func() {}
	}
	g.active.Add(1)
	g.lastBusy.Store(time.Now().UnixNano())
	// Sequentially consistent with Tick's store of narrowed and load of
	// active: either this sees narrowed, or Tick sees this connection.
	if g.narrowed.Load() {
		g.widen()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			g.lastBusy.Store(time.Now().UnixNano())
			g.active.Add(-1)
		})
	}
}

// Tick: see the package-level Tick.
func (g *Governor) Tick(now time.Time) {
	if !g.on.Load() || g.narrowed.Load() {
		return
	}
	if !ShouldNarrow(g.active.Load(), time.Unix(0, g.lastBusy.Load()), now, g.idleAfter) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.narrowed.Load() {
		return
	}
	g.narrowed.Store(true)
	if g.active.Load() > 0 { // a connection began meanwhile
		g.narrowed.Store(false)
		return
	}
	g.narrow()
}

func (g *Governor) widen() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.narrowed.Load() {
		g.restore()
		g.narrowed.Store(false)
	}
}

// ShouldNarrow is the decision: no connection is active, and none began
// or ended within idleAfter of now.
func ShouldNarrow(active int64, lastBusy, now time.Time, idleAfter time.Duration) bool {
	return active == 0 && now.Sub(lastBusy) >= idleAfter
}
