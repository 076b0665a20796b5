package tunnel

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/meshd/meshd/internal/key"
)

// TestSessionAuthRefusesImpostor: a connection to a peer's session port
// from this node's mesh address (what any local process can open in kernel
// mode) that cannot prove this node's WireGuard key gets no session, and
// the real session keeps working.
func TestSessionAuthRefusesImpostor(t *testing.T) {
	a := newTestTunnel(t, echo)
	b := newTestTunnel(t, echo)
	defer a.Close()
	defer b.Close()
	link(t, a, b)
	exchange := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := a.OpenStream(ctx, b.PublicKey())
		if err != nil {
			t.Fatalf("%s: open stream: %v", what, err)
		}
		defer s.Close()
		s.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Write([]byte("ping")); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(s, got); err != nil || string(got) != "ping" {
			t.Fatalf("%s: echo %q, %v", what, got, err)
		}
	}
	exchange("before")

	for _, impostor := range []struct {
		name  string
		speak func(c net.Conn)
	}{
		{"yamux at once", func(c net.Conn) { c.Write([]byte{0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}) }},
		{"handshake with another key", func(c net.Conn) {
			other, _ := key.NewPrivate()
			fake := &Tunnel{cfg: Config{PrivateKey: other}}
			fake.authSession(context.Background(), c, b.PublicKey(), true)
		}},
		{"MSA2 hello with another key", func(c net.Conn) {
			other, _ := key.NewPrivate()
			bp := b.PublicKey()
			d, _ := curve25519.X25519(other[:], bp[:])
			var nonce [sessionNonceLen]byte
			rand.Read(nonce[:])
			c.Write(hello2(d, a.PublicKey(), b.PublicKey(), &nonce, time.Now().UnixNano()))
			c.Write([]byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}) // yamux at once
		}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := a.net.DialTCP(ctx, netip.AddrPortFrom(b.MeshIP(), SessionPort))
		cancel()
		if err != nil {
			t.Fatalf("%s: dial: %v", impostor.name, err)
		}
		impostor.speak(c)
		c.SetDeadline(time.Now().Add(sessionAuthTimeout + 3*time.Second))
		start := time.Now()
		n, _ := io.Copy(io.Discard, c) // b closes it
		c.Close()
		if time.Since(start) > sessionAuthTimeout+2*time.Second {
			t.Errorf("%s: b kept the connection open", impostor.name)
		}
		if n > int64(len(sessionAuthMagic)+sessionNonceLen+32) || strings.HasPrefix(impostor.name, "MSA2") && n > 0 {
			t.Errorf("%s: b sent %d bytes: more than its handshake", impostor.name, n)
		}
		exchange("after " + impostor.name)
	}
}
