package node

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// brokenConnLog reports proxied connections that ended with an error
// (a reset stream, a write timeout on a stalled session) rather than by a
// close from either end. Many break at once when a session dies, so it
// logs at most one line per interval, with the count since the last line.
type brokenConnLog struct {
	log      *slog.Logger
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (b *brokenConnLog) report(kind, name, peer string, aToB, bToA int64, err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	b.mu.Lock()
	now := time.Now()
	if now.Sub(b.last) < b.interval {
		b.suppressed++
		b.mu.Unlock()
		return
	}
	more := b.suppressed
	b.last, b.suppressed = now, 0
	b.mu.Unlock()
	b.log.Warn("connection broken", "kind", kind, "name", name, "peer", peer,
		"bytes_out", aToB, "bytes_in", bToA, "err", err, "more_since_last_report", more)
}
