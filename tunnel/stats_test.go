package tunnel

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestAllSessionStatsWithoutUAPI: the stats a metrics scrape reads come
// from the tunnel's own counters, not WireGuard's UAPI dump: they are
// served while the UAPI lock is held, and their byte counters follow the
// traffic (4 MiB each way at least).
func TestAllSessionStatsWithoutUAPI(t *testing.T) {
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
	go func() {
		s.Write(make([]byte, 4<<20))
		CloseWrite(s)
	}()
	if n, err := io.Copy(io.Discard, s); err != nil || n != 4<<20 {
		t.Fatalf("echo: %d bytes, %v", n, err)
	}
	s.Close()

	a.ipcMu.Lock()
	got := make(chan PeerStats, 1)
	go func() { got <- a.AllSessionStats()[b.PublicKey()] }()
	select {
	case st := <-got:
		a.ipcMu.Unlock()
		if !st.SessionUp || st.TxBytes < 4<<20 || st.RxBytes < 4<<20 || st.Path != "direct" {
			t.Fatalf("session stats: %+v", st)
		}
	case <-time.After(2 * time.Second):
		a.ipcMu.Unlock()
		t.Fatal("AllSessionStats waits for the UAPI lock")
	}
	// Stats (status) agrees on the bytes and adds the handshake time.
	if st := a.Stats()[b.PublicKey()]; st.TxBytes < 4<<20 || st.LastHandshake.IsZero() {
		t.Fatalf("stats: %+v", st)
	}
}
