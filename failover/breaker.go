package failover

import (
	"sync"
	"time"
)

// BreakerConfig configures a Breaker. The zero value means the defaults.
type BreakerConfig struct {
	// Cooldown is how long a key stays open after its first failure
	// before one trial is allowed. <= 0 means 1s.
	Cooldown time.Duration
	// MaxCooldown caps the doubling cooldown after consecutive failures.
	// <= 0 means 30s; a value below Cooldown counts as Cooldown.
	MaxCooldown time.Duration
}

// DefaultBreakerConfig returns the configuration the zero value stands for.
func DefaultBreakerConfig() BreakerConfig {
	return BreakerConfig{Cooldown: time.Second, MaxCooldown: 30 * time.Second}
}

// withDefaults fills in unset fields.
func (c BreakerConfig) withDefaults() BreakerConfig {
	d := DefaultBreakerConfig()
	if c.Cooldown <= 0 {
		c.Cooldown = d.Cooldown
	}
	if c.MaxCooldown <= 0 {
		c.MaxCooldown = d.MaxCooldown
	}
	c.MaxCooldown = max(c.MaxCooldown, c.Cooldown)
	return c
}

// cooldown returns the cooldown after n >= 1 consecutive failures:
// Cooldown doubled n-1 times, capped at MaxCooldown without overflowing.
func (c BreakerConfig) cooldown(n int) time.Duration {
	d := c.Cooldown
	for i := 1; i < n; i++ {
		if d > c.MaxCooldown/2 {
			return c.MaxCooldown
		}
		d *= 2
	}
	return min(d, c.MaxCooldown)
}

// Breaker is a circuit breaker per endpoint key (for example
// "service/node"). It is safe for concurrent use.
//
// A key with no recorded failure is closed: Allow returns true. Failure
// opens it for a cooldown, during which Allow returns false. Once the
// cooldown has passed the key is half-open: the next Allow returns true
// (that caller runs the trial) and every other caller gets false until the
// trial reports. Success closes the key; Failure re-opens it with the next,
// doubled cooldown (capped at MaxCooldown). A trial that never reports does
// not wedge the key: one cooldown after the trial was granted, Allow grants
// another.
//
// Failure reported while a key is open and no trial is out (an attempt that
// was allowed before the key opened, finishing late) leaves the key as it
// is, so that a burst of connections failing at once counts as one failure,
// not as many doublings. Breaker cannot tell the trial's report from a
// straggler's once a trial is out; either counts.
//
// Memory: only keys that are not closed have an entry; Success deletes it.
// Keys that fail and are never tried again keep theirs until Forget.
type Breaker struct {
	cfg BreakerConfig // immutable

	mu   sync.Mutex
	keys map[string]*breakerEntry // guarded by mu; absent means closed
}

// breakerEntry is the state of a key that is not closed.
type breakerEntry struct {
	failures int       // consecutive failures, >= 1
	until    time.Time // open (or trial out) until then; due a (new) trial at or after
	trial    bool      // a trial was granted at until-cooldown and has not reported
}

// NewBreaker returns a Breaker with every key closed.
func NewBreaker(cfg BreakerConfig) *Breaker {
	return &Breaker{cfg: cfg.withDefaults(), keys: make(map[string]*breakerEntry)}
}

// Open reports whether key is open and not yet due a retry at now: a
// cooldown is running, or a trial is out and has not yet timed out. It
// does not change any state, so callers may use it to rank candidates.
func (b *Breaker) Open(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.keys[key]
	return e != nil && now.Before(e.until)
}

// Allow reports whether a caller may attempt key at now. Closed keys
// always allow. A key whose cooldown has passed allows exactly one caller,
// the trial, which must report Success or Failure; everyone else is refused
// until the trial reports or one more cooldown passes.
func (b *Breaker) Allow(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.keys[key]
	if e == nil {
		return true
	}
	if now.Before(e.until) {
		return false
	}
	e.trial = true
	e.until = now.Add(b.cfg.cooldown(e.failures))
	return true
}

// Success records a working attempt at key: the key closes and its backoff
// resets.
func (b *Breaker) Success(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.keys, key)
}

// Failure records a failed attempt at key at now. A closed key opens for
// Cooldown. A failed trial, or a failure reported once the cooldown has
// passed, re-opens it with the cooldown doubled (up to MaxCooldown). A
// failure while the key is still open with no trial out changes nothing.
func (b *Breaker) Failure(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.keys[key]
	switch {
	case e == nil:
		e = &breakerEntry{}
		b.keys[key] = e
	case !e.trial && now.Before(e.until):
		return // a straggler from before the key opened
	}
	e.failures = min(e.failures+1, 64) // beyond 64 doublings the cap has long applied
	e.trial = false
	e.until = now.Add(b.cfg.cooldown(e.failures))
}

// Forget drops key's state (it becomes closed), for endpoints that left.
func (b *Breaker) Forget(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.keys, key)
}

// Len returns the number of keys that are not closed.
func (b *Breaker) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.keys)
}
