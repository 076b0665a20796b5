package tunnel

import (
	"context"
	"testing"
	"time"
)

// TestSessionUpWhenPeersAddedApart: whichever side learns of the other
// first, the session comes up well before WireGuard's 5 s handshake retry.
func TestSessionUpWhenPeersAddedApart(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond} {
		for _, dialerFirst := range []bool{true, false} {
			a := newTestTunnel(t, echo)
			b := newTestTunnel(t, echo)
			if !a.PublicKey().Less(b.PublicKey()) {
				a, b = b, a
			}
			// a dials.
			first, second := a, b
			if !dialerFirst {
				first, second = b, a
			}
			other := map[*Tunnel]*Tunnel{a: b, b: a}
			start := time.Now()
			first.SetPeers([]Peer{{PublicKey: other[first].PublicKey(), Endpoint: other[first].LocalAddr()}})
			time.Sleep(delay)
			second.SetPeers([]Peer{{PublicKey: other[second].PublicKey(), Endpoint: other[second].LocalAddr()}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s, err := a.OpenStream(ctx, b.PublicKey())
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			t.Logf("delay=%v dialerFirst=%v session after %v", delay, dialerFirst, time.Since(start))
			a.Close()
			b.Close()
		}
	}
}
