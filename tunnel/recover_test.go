package tunnel

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// TestRecoverAfterCut: streams opened, written and abandoned during a cut
// (bulk both ways, like clients and probes) must not keep the session
// stuck once the link returns: pings are answered again within a few
// seconds, long before the session timeout. (With gVisor's SACK recovery
// on, this took 4-11 s.)
func TestRecoverAfterCut(t *testing.T) {
	for round := 0; round < 2; round++ {
		a := newTestTunnel(t, echo)
		b := newTestTunnel(t, echo)
		link(t, a, b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := a.OpenStream(ctx, b.PublicKey())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		// A bulk stream that keeps writing through the cut.
		bulkDone := make(chan struct{})
		go func() {
			defer close(bulkDone)
			buf := make([]byte, 64<<10)
			go io.Copy(io.Discard, s)
			for i := 0; i < 200; i++ {
				s.SetWriteDeadline(time.Now().Add(20 * time.Second))
				if _, err := s.Write(buf); err != nil {
					return
				}
			}
			s.Close()
		}()
		time.Sleep(200 * time.Millisecond)

		b.SetBlackhole([]key.PublicKey{a.PublicKey()})
		cutEnd := time.Now().Add(4 * time.Second)
		for time.Now().Before(cutEnd) {
			ctx, cancel := context.WithTimeout(context.Background(), 750*time.Millisecond)
			if s, err := a.OpenStream(ctx, b.PublicKey()); err == nil {
				s.Write(make([]byte, 1000))
				go func() { <-ctx.Done(); s.Close() }()
			}
			time.Sleep(100 * time.Millisecond)
			cancel()
		}
		b.SetBlackhole(nil)
		restored := time.Now()
		for {
			st := a.Stats()[b.PublicKey()]
			if st.SessionUp && st.LastPong.After(restored) {
				break
			}
			if time.Since(restored) > 3*time.Second {
				t.Fatalf("round %d: session not answering 3s after restore: %+v", round, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("round %d: pong %v after restore", round, time.Since(restored).Round(time.Millisecond))
		a.Close()
		b.Close()
		<-bulkDone
	}
}
