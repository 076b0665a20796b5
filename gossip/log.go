package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// Rate limits for repetitive warnings (wrong cluster key, malformed catalog
// messages, name conflicts): one line per key per limitEvery, at most
// limitKeys keys remembered.
const (
	limitEvery = 30 * time.Second
	limitKeys  = 1024
)

// limiter allows one event per key per interval. It remembers at most max
// keys: when max-1 ordinary keys are remembered it forgets expired ones, and
// if none expired every new key shares one overflow key, so memory stays
// bounded whatever the input.
type limiter struct {
	every time.Duration
	max   int

	mu   sync.Mutex
	last map[string]time.Time // guarded by mu
}

const overflowKey = "\x00overflow"

func newLimiter(every time.Duration, max int) *limiter {
	return &limiter{every: every, max: max, last: make(map[string]time.Time)}
}

// allow reports whether an event for key may be logged at now.
func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, seen := l.last[key]; !seen && l.ordinaryLocked() >= l.max-1 {
		for k, t := range l.last {
			if now.Sub(t) >= l.every {
				delete(l.last, k)
			}
		}
		if l.ordinaryLocked() >= l.max-1 {
			key = overflowKey
		}
	}
	if t, seen := l.last[key]; seen && now.Sub(t) < l.every {
		return false
	}
	l.last[key] = now
	return true
}

func (l *limiter) ordinaryLocked() int {
	if _, ok := l.last[overflowKey]; ok {
		return len(l.last) - 1
	}
	return len(l.last)
}

// mlWriter is the io.Writer behind memberlist's *log.Logger. Each Write is
// one line "[LEVEL] memberlist: text"; it is logged to slog at that level,
// except:
//   - decryption failures (a peer with another cluster key, or none) become
//     one rate-limited WARN line per source IP;
//   - "Suspect X has failed" also marks X suspect (memberlist has no event
//     for suspicion);
//   - errors caused by our own shutdown go to DEBUG.
//
// memberlist calls Write from its own goroutines, sometimes under its locks:
// it must not block or call back into memberlist.
type mlWriter struct {
	log       *slog.Logger
	lim       *limiter
	gate      *logGate // lines a remote sender can cause; nil = lim alone
	onSuspect func(name string)
	now       func() time.Time
}

// allowRemote reports whether a line caused by a remote sender may be written.
func (w *mlWriter) allowRemote(key string) bool {
	if w.gate != nil {
		return w.gate.allow(key)
	}
	return w.lim.allow(key, w.now())
}

func (w *mlWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		w.line(string(line))
	}
	return len(p), nil
}

const (
	suspectPrefix = "memberlist: Suspect "
	suspectSuffix = " has failed, no acks received"
)

func (w *mlWriter) line(s string) {
	level, text := parseLevel(s)
	ctx := context.Background()
	if strings.HasPrefix(text, "memberlist: ignoring alive message for ") {
		// Refused by NotifyAlive (the member cap), which logs it once per
		// interval; the names are the sender's to choose.
		w.log.Debug(text)
		return
	}

	if level >= slog.LevelWarn {
		if msg, key, ok := rejection(text); ok {
			if w.allowRemote(key) {
				w.log.Warn(msg)
			}
			w.log.Debug(text)
			return
		}
		if strings.Contains(text, "use of closed network connection") {
			level = slog.LevelDebug
		} else if host, ok := remoteSource(text); ok {
			// Anything else memberlist says about a remote address
			// (an unacceptable label, a failed error reply, a bad
			// packet) can be caused at will by whoever reaches the
			// gossip port: one line per source and interval, and a
			// bounded number in all.
			if w.allowRemote("remote:" + host) {
				w.log.Log(ctx, level, text)
			}
			return
		}
	}
	if strings.Contains(text, "over TCP but UDP probes failed") {
		// UDP blocked between two nodes: memberlist's TCP fallback ping
		// keeps the member alive. Say so once per peer per interval.
		peer := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(text, " over TCP", 2)[0], "memberlist: Was able to connect to "))
		if w.lim.allow("tcponly:"+peer, w.now()) {
			w.log.Warn("gossip: UDP to " + peer + " fails; membership kept by TCP pings (check firewalls)")
		}
		w.log.Debug(text)
		return
	}
	if strings.HasPrefix(text, suspectPrefix) && strings.HasSuffix(text, suspectSuffix) {
		w.onSuspect(strings.TrimSuffix(strings.TrimPrefix(text, suspectPrefix), suspectSuffix))
	}
	w.log.Log(ctx, level, text)
}

// parseLevel splits memberlist's "[LEVEL] text" into a slog level and text.
func parseLevel(s string) (slog.Level, string) {
	for _, p := range []struct {
		tag   string
		level slog.Level
	}{
		{"[DEBUG] ", slog.LevelDebug},
		{"[INFO] ", slog.LevelInfo},
		{"[WARN] ", slog.LevelWarn},
		{"[ERR] ", slog.LevelError},
		{"[ERROR] ", slog.LevelError},
		{"Err: ", slog.LevelError},
	} {
		if rest, ok := strings.CutPrefix(s, p.tag); ok {
			return p.level, rest
		}
	}
	return slog.LevelInfo, s
}

// decryptFailures are the texts of memberlist's errors (security.go, net.go)
// when a message cannot be authenticated with any installed key.
var decryptFailures = []string{
	"no installed keys could decrypt the message",
	"Decrypt packet failed",
	"payload is too small to decrypt",
	"cannot decrypt empty payload",
}

// rejection recognises a memberlist error caused by a peer that uses another
// cluster key (or none) and returns the one line to log for it and the
// rate-limit key.
func rejection(text string) (msg, key string, ok bool) {
	var why string
	switch {
	case containsAny(text, decryptFailures):
		why = "cannot decrypt (wrong cluster key?)"
	case strings.Contains(text, "encryption is configured but remote state is not encrypted"):
		why = "not encrypted (peer has no cluster key?)"
	case strings.Contains(text, "failed to receive") || strings.Contains(text, "Failed to receive"):
		// Anything else unreadable on the gossip port (garbage, a port
		// scanner, an oversized state): one line per source per interval.
		why = "unreadable (" + shortCause(text) + ")"
	default:
		return "", "", false
	}
	if i := strings.LastIndex(text, "from="); i >= 0 {
		from := strings.TrimSpace(text[i+len("from="):])
		host := from
		if h, _, err := net.SplitHostPort(from); err == nil {
			host = h
		}
		return fmt.Sprintf("gossip: rejected message from %s: %s", from, why), "reject:" + host, true
	}
	// Our own push/pull or TCP ping to a known member whose reply we cannot
	// read: "Push/Pull with NAME failed: …", "Failed fallback TCP ping: …".
	if rest, ok := strings.CutPrefix(text, "memberlist: Push/Pull with "); ok {
		if name, _, ok := strings.Cut(rest, " failed: "); ok {
			return fmt.Sprintf("gossip: push/pull with %s: reply %s", name, why), "pushpull:" + name, true
		}
	}
	return "gossip: gossip exchange failed: " + why, "reject:?", true
}

// remoteSource returns the host of memberlist's "from=host:port" suffix
// (LogConn, LogAddress).
func remoteSource(text string) (string, bool) {
	i := strings.LastIndex(text, "from=")
	if i < 0 {
		return "", false
	}
	from := strings.TrimSpace(text[i+len("from="):])
	if h, _, err := net.SplitHostPort(from); err == nil {
		return h, true
	}
	return from, true
}

// shortCause is memberlist's error text without its "from=" suffix.
func shortCause(text string) string {
	if i := strings.LastIndex(text, " from="); i >= 0 {
		text = text[:i]
	}
	if i := strings.Index(text, "failed to receive: "); i >= 0 {
		text = text[i+len("failed to receive: "):]
	}
	return strings.TrimSpace(text)
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
