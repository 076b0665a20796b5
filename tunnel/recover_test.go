package tunnel

import (
	"context"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// TestRecoverAfterCutWithStreamOpens: streams opened and abandoned during a
// cut must not keep the session stuck once the link returns.
func TestRecoverAfterCutWithStreamOpens(t *testing.T) {
	a := newTestTunnel(t, echo)
	b := newTestTunnel(t, echo)
	defer a.Close()
	defer b.Close()
	link(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, err := a.OpenStream(ctx, b.PublicKey())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	time.Sleep(500 * time.Millisecond)

	b.SetBlackhole([]key.PublicKey{a.PublicKey()})
	cutEnd := time.Now().Add(3 * time.Second)
	for time.Now().Before(cutEnd) {
		ctx, cancel := context.WithTimeout(context.Background(), 750*time.Millisecond)
		s, err := a.OpenStream(ctx, b.PublicKey())
		if err == nil {
			s.Write([]byte("hello"))
			go func() { <-ctx.Done(); s.Close() }()
		}
		time.Sleep(100 * time.Millisecond)
		cancel()
	}
	b.SetBlackhole(nil)
	restored := time.Now()
	for {
		st := a.Stats()[b.PublicKey()]
		if st.SessionUp && !st.LastPong.IsZero() && st.LastPong.After(restored) {
			break
		}
		if time.Since(restored) > 20*time.Second {
			t.Fatalf("session not answering 20s after restore: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("pong %v after restore", time.Since(restored))
}
