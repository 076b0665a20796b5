package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/testutil"
)

func newTestTunnel(t testing.TB, handle func(key.PublicKey, net.Conn)) *Tunnel {
	t.Helper()
	return newTunnelConfig(t, Config{HandleStream: handle})
}

// newTunnelConfig makes a tunnel of cfg on a loopback port with a new key
// (cfg's PrivateKey and Listen are set here).
func newTunnelConfig(t testing.TB, cfg Config) *Tunnel {
	t.Helper()
	k, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	cfg.PrivateKey, cfg.Listen = k, netip.MustParseAddrPort("127.0.0.1:0")
	tn, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func echo(_ key.PublicKey, s net.Conn) {
	io.Copy(s, s)
	CloseWrite(s)
	// Drain until the peer finishes so the stream closes cleanly.
	io.Copy(io.Discard, s)
	s.Close()
}

func link(t testing.TB, a, b *Tunnel) {
	t.Helper()
	if err := a.SetPeers([]Peer{{PublicKey: b.PublicKey(), Endpoint: b.LocalAddr()}}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeers([]Peer{{PublicKey: a.PublicKey(), Endpoint: a.LocalAddr()}}); err != nil {
		t.Fatal(err)
	}
}

func TestStreamBothDirections(t *testing.T) {
	base := testutil.Snapshot()
	a := newTestTunnel(t, echo)
	b := newTestTunnel(t, echo)
	link(t, a, b)

	for _, dir := range []struct {
		from, to *Tunnel
	}{{a, b}, {b, a}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := dir.from.OpenStream(ctx, dir.to.PublicKey())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, 4<<20)
		rand.Read(payload)
		go func() {
			s.Write(payload)
			CloseWrite(s) // half-close: the echo must still come back
		}()
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(payload) {
			t.Fatalf("echo mismatch: got %d bytes", len(got))
		}
		s.Close()
	}

	st := a.Stats()[b.PublicKey()]
	if !st.SessionUp || st.LastHandshake.IsZero() || st.TxBytes == 0 || st.Endpoint != b.LocalAddr() {
		t.Fatalf("stats: %+v", st)
	}

	a.Close()
	b.Close()
	a.Close() // twice is fine
	waitGoroutines(t, base)
}

func TestProxyHalfClose(t *testing.T) {
	// backend: reads until the half-close arrives, then answers.
	backendLn := listenTCP(t)
	go func() {
		c, err := backendLn.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(b))
		c.Close()
	}()
	// proxy: front listener → backend.
	frontLn := listenTCP(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := frontLn.Accept()
		if err != nil {
			return
		}
		be, err := net.Dial("tcp", backendLn.Addr().String())
		if err != nil {
			c.Close()
			return
		}
		Proxy(context.Background(), c, be)
	}()
	c, err := net.Dial("tcp", frontLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "HELLO" {
		t.Fatalf("got %q, %v", got, err)
	}
	<-done
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func waitGoroutines(t *testing.T, base testutil.Leaks) {
	t.Helper()
	base.CheckGoroutines(t, 5*time.Second, 2)
}
