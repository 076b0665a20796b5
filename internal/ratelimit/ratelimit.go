// Package ratelimit holds the small rate limiters meshd puts in front of
// anything a remote sender can trigger: a token bucket for new connections
// (imports' rate and burst) and for log lines, and an Every gate that lets
// one event through per interval.
//
// Decisions take the current time as an argument, so they are tested with
// step tables; limits can be changed on a live limiter (config reload) with
// Set. All methods are safe for concurrent use.
package ratelimit

import (
	"sync"
	"time"
)

// Bucket is a token bucket: it holds at most burst tokens, gains rate tokens
// per second, and Allow takes one. A rate of 0 means unlimited.
type Bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second; 0 = unlimited
	burst  float64
	tokens float64
	last   time.Time // when tokens was last brought up to date; zero = never
}

// NewBucket returns a full bucket. rate ≤ 0 means unlimited; burst ≤ 0 means
// max(1, rate).
func NewBucket(rate float64, burst int) *Bucket {
	b := &Bucket{}
	b.Set(rate, burst)
	return b
}

// Set changes the rate and burst (as in NewBucket). The tokens already held
// are kept, up to the new burst; a bucket that was unlimited starts full.
func (b *Bucket) Set(rate float64, burst int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasUnlimited := b.rate <= 0
	b.rate = max(rate, 0)
	b.burst = float64(burst)
	if burst <= 0 {
		b.burst = max(1, b.rate)
	}
	if wasUnlimited || b.tokens > b.burst {
		b.tokens = b.burst
	}
}

// Allow reports whether an event may happen at now, and takes a token if so.
func (b *Bucket) Allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return true
	}
	if !b.last.IsZero() {
		if d := now.Sub(b.last); d > 0 {
			b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		}
	}
	if b.last.IsZero() || now.After(b.last) {
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// Every lets one event through per interval and counts the ones it holds
// back, so that the next line that is let through can say how many were
// suppressed.
type Every struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time // zero = never
	suppressed uint64
}

// NewEvery returns a gate that lets one event through per every.
func NewEvery(every time.Duration) *Every { return &Every{every: every} }

// Allow reports whether an event may be logged at now. When it may,
// suppressed is the number of events held back since the last one let
// through.
func (e *Every) Allow(now time.Time) (ok bool, suppressed uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.last.IsZero() && now.Sub(e.last) < e.every {
		e.suppressed++
		return false, 0
	}
	e.last = now
	s := e.suppressed
	e.suppressed = 0
	return true, s
}
