package failover

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// ErrNoEndpoints is wrapped by the error Attempt returns when it is given
// no candidates at all.
var ErrNoEndpoints = errors.New("no healthy endpoint")

// Failure is one failed attempt.
type Failure struct {
	Endpoint Endpoint
	Err      error
}

// AllFailedError is returned by Attempt when no candidate succeeded.
//
// Its Error is one line. When every candidate was tried:
//
//	all 2 endpoints failed: node-a: <err>; node-b: <err>
//
// When ctx ended before every candidate was tried:
//
//	tried 1 of 3 endpoints before context canceled: node-a: <err>
//
// errors.Is and errors.As see every attempt's error and, when set, Err.
type AllFailedError struct {
	Total    int       // number of candidates given to Attempt
	Failures []Failure // one per attempted endpoint, in attempt order
	Err      error     // ctx.Err() when ctx ended before every candidate was tried, else nil
}

func (e *AllFailedError) Error() string {
	var b strings.Builder
	if e.Err != nil {
		fmt.Fprintf(&b, "tried %d of %d endpoints before %v", len(e.Failures), e.Total, e.Err)
	} else {
		fmt.Fprintf(&b, "all %d endpoints failed", e.Total)
	}
	for i, f := range e.Failures {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %v", f.Endpoint.Node, f.Err)
	}
	return b.String()
}

// Unwrap returns the attempts' errors followed by Err, if set.
func (e *AllFailedError) Unwrap() []error {
	errs := make([]error, 0, len(e.Failures)+1)
	for _, f := range e.Failures {
		errs = append(errs, f.Err)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Attempt calls fn for each candidate in order until one succeeds, and
// returns that result and its endpoint.
//
// Each call gets its own context derived from ctx, with a deadline of
// timeout(ep) when timeout is non-nil and returns > 0. That context is
// cancelled as soon as fn returns, so fn must not tie the lifetime of its
// result to it (as with net.Dialer.DialContext, it bounds the dial only).
// An error from an attempt that ran out of its own deadline is annotated
// with the deadline.
//
// When every candidate fails, or ctx ends first (checked before each
// attempt), Attempt returns an *AllFailedError. With no candidates it
// returns an error wrapping ErrNoEndpoints. fn is called sequentially, from
// the calling goroutine.
func Attempt[T any](ctx context.Context, cands []Endpoint, timeout func(Endpoint) time.Duration, fn func(ctx context.Context, ep Endpoint) (T, error)) (T, Endpoint, error) {
	var zero T
	if len(cands) == 0 {
		return zero, Endpoint{}, fmt.Errorf("failover: no candidates: %w", ErrNoEndpoints)
	}
	fail := &AllFailedError{Total: len(cands)}
	for _, ep := range cands {
		if err := ctx.Err(); err != nil {
			fail.Err = err
			break
		}
		v, err := attemptOne(ctx, ep, timeout, fn)
		if err == nil {
			return v, ep, nil
		}
		fail.Failures = append(fail.Failures, Failure{Endpoint: ep, Err: err})
		if IsFinal(err) {
			break
		}
	}
	return zero, Endpoint{}, fail
}

// attemptOne runs fn once under the endpoint's own deadline.
func attemptOne[T any](ctx context.Context, ep Endpoint, timeout func(Endpoint) time.Duration, fn func(ctx context.Context, ep Endpoint) (T, error)) (T, error) {
	var d time.Duration
	if timeout != nil {
		d = timeout(ep)
	}
	var (
		actx   context.Context
		cancel context.CancelFunc
	)
	if d > 0 {
		actx, cancel = context.WithTimeout(ctx, d)
	} else {
		actx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	v, err := fn(actx, ep)
	if err != nil && d > 0 && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within %v: %w", d, err)
	}
	return v, err
}

// AttemptTimeout derives a per-attempt deadline from a peer's RTT:
// max(floor, mult*rtt), or floor when rtt is unknown (<= 0). mult < 1
// counts as 1; the product saturates instead of overflowing. For example
// AttemptTimeout(rtt, time.Second, 8).
func AttemptTimeout(rtt, floor time.Duration, mult int) time.Duration {
	if rtt <= 0 {
		return floor
	}
	m := time.Duration(max(mult, 1))
	if rtt > math.MaxInt64/m {
		return math.MaxInt64
	}
	return max(floor, rtt*m)
}

// Final marks err as final: Attempt tries no further candidates after it
// (an exporter's policy refused the importer; another endpoint would not
// change that).
func Final(err error) error { return &finalError{err: err} }

type finalError struct{ err error }

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() error { return e.err }

// IsFinal reports whether err, or an error it wraps, was marked by Final.
func IsFinal(err error) bool {
	var f *finalError
	return errors.As(err, &f)
}
