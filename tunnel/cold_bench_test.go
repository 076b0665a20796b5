package tunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/meshd/meshd/internal/key"
)

// makeCold closes the sessions between a and b and removes their WireGuard
// entries, as for peers that have had no traffic for wgIdleAfter.
func makeCold(tb testing.TB, a, b *Tunnel) {
	tb.Helper()
	waitUntil(tb, 5*time.Second, "streams gone", func() bool {
		return a.Stats()[b.PublicKey()].Streams == 0 && b.Stats()[a.PublicKey()].Streams == 0
	})
	waitUntil(tb, 5*time.Second, "both idle", func() bool {
		a.CloseIdle(b.PublicKey())
		b.CloseIdle(a.PublicKey())
		return a.Stats()[b.PublicKey()].Session == SessionStateIdle && b.Stats()[a.PublicKey()].Session == SessionStateIdle
	})
	// (A probe still on its way when the sessions closed makes its
	// receiver a WireGuard peer again: trim until none comes.)
	waitUntil(tb, 5*time.Second, "WireGuard peers trimmed", func() bool {
		later := time.Now().Add(wgIdleAfter + time.Second)
		a.trimIdle(later)
		b.trimIdle(later)
		return !a.bind.IsWG(b.PublicKey()) && !b.bind.IsWG(a.PublicKey())
	})
}

// BenchmarkColdFirstStream: the first stream and round trip to a cold peer
// (no session, no WireGuard peer on either side), against the next round
// trip on the session it opened (warm) in the same iteration. "smaller" is
// the node with the smaller key needing the session, "larger" the other.
// Besides cold-ns and warm-ns it reports the ratio and, for each step of
// the setup (see trace), the median time from the start to its first
// occurrence: need: the node that opens the stream, peer: the other.
//
//	go test -run XXX -bench ColdFirstStream -benchtime 30x ./tunnel
func BenchmarkColdFirstStream(b *testing.B) {
	for _, who := range []string{"smaller", "larger"} {
		b.Run(who, func(b *testing.B) {
			x, y := newProbingTunnel(b), newProbingTunnel(b)
			if x.PublicKey().Less(y.PublicKey()) != (who == "smaller") {
				x, y = y, x
			}
			link(b, x, y)
			pingStream(b, x, y, 5*time.Second) // warms up code paths
			var mu sync.Mutex
			var start time.Time
			steps := make(map[string]time.Duration)
			hook := func(self, _ key.PublicKey, step string) {
				role := "peer"
				if self == x.PublicKey() {
					role = "need"
				}
				k := role + ":" + strings.ReplaceAll(step, " ", "-")
				mu.Lock()
				if _, ok := steps[k]; !ok && !start.IsZero() {
					steps[k] = time.Since(start)
				}
				mu.Unlock()
			}
			traceHook.Store(&hook)
			defer traceHook.Store(nil)
			var cold, warm []time.Duration
			perStep := make(map[string][]time.Duration)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				makeCold(b, x, y)
				mu.Lock()
				clear(steps)
				start = time.Now()
				mu.Unlock()
				b.StartTimer()
				cold = append(cold, pingStream(b, x, y, 10*time.Second))
				warm = append(warm, pingStream(b, x, y, 5*time.Second))
				mu.Lock()
				for k, d := range steps {
					perStep[k] = append(perStep[k], d)
				}
				start = time.Time{}
				mu.Unlock()
			}
			b.StopTimer()
			med := func(ds []time.Duration) float64 {
				slices.Sort(ds)
				return float64(ds[len(ds)/2])
			}
			c, w := med(cold), med(warm)
			b.ReportMetric(c, "cold-ns")
			b.ReportMetric(w, "warm-ns")
			b.ReportMetric(c/w, "cold/warm")
			for k, ds := range perStep {
				if len(ds) == len(cold) {
					b.ReportMetric(med(ds)/1e3, k+"-us")
				}
			}
		})
	}
}

// pingStream opens a stream from from to to whose handshake is one round
// trip (as meshd ping's and an import's open request are: DialStream) and
// returns how long that took.
func pingStream(tb testing.TB, from, to *Tunnel, d time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := from.DialStream(ctx, to.PublicKey(), func(s net.Conn) error {
		if _, err := s.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
			return fmt.Errorf("echo: %q %w", buf, err)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	took := time.Since(start)
	s.Close()
	return took
}

// BenchmarkSharedSecret: one X25519 of two node keys, the dearest step of
// a handshake (WireGuard's takes nine one after the other on a cold
// connection; see README "First connection to a cold peer").
//
//	go test -run XXX -bench SharedSecret ./tunnel
func BenchmarkSharedSecret(b *testing.B) {
	k1, err := key.NewPrivate()
	if err != nil {
		b.Fatal(err)
	}
	k2, err := key.NewPrivate()
	if err != nil {
		b.Fatal(err)
	}
	pub := k2.Public()
	for b.Loop() {
		if _, err := curve25519.X25519(k1[:], pub[:]); err != nil {
			b.Fatal(err)
		}
	}
}
