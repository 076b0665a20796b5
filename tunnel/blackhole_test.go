package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// TestBlackholeStallAndRecover: a black hole silences the session (the
// outstanding ping ages) without closing it, and a stream in flight
// completes intact once it is lifted.
func TestBlackholeStallAndRecover(t *testing.T) {
	a := newTestTunnel(t, echo)
	b := newTestTunnel(t, echo)
	defer a.Close()
	defer b.Close()
	link(t, a, b)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := a.OpenStream(ctx, b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := make([]byte, 8<<20)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	got := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		io.Copy(h, s)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	if _, err := s.Write(payload[:1<<20]); err != nil {
		t.Fatal(err)
	}

	a.SetBlackhole([]key.PublicKey{b.PublicKey()})
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := a.Stats()[b.PublicKey()]
		if !st.PingPending.IsZero() && time.Since(st.PingPending) > 500*time.Millisecond {
			if !st.SessionUp {
				t.Fatal("session closed by a short stall")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("black hole not visible in stats: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.SetBlackhole(nil)
	restored := time.Now()
	defer func() { t.Logf("recovered %v after restore", time.Since(restored)) }()
	if _, err := s.Write(payload[1<<20:]); err != nil {
		t.Fatal(err)
	}
	CloseWrite(s)
	select {
	case sum := <-got:
		if sum != want {
			t.Fatal("stream corrupted across the black hole")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stream did not complete after the black hole was lifted")
	}
	if st := a.Stats()[b.PublicKey()]; !st.SessionUp {
		t.Fatalf("session down after recovery: %+v", st)
	}
}
