package tunnel

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/device"
)

// TestSecretsAheadOfNeed: a member's static-static secret is made when it
// arrives (secretLoop), before it has any traffic; it is exactly the
// X25519 of the two node keys, WireGuard is given it only for this node's
// own key, and a first stream's handshake works on it.
func TestSecretsAheadOfNeed(t *testing.T) {
	a := newTestTunnel(t, echo)
	b := newTestTunnel(t, echo)
	defer a.Close()
	defer b.Close()
	link(t, a, b)

	deadline := time.Now().Add(5 * time.Second)
	for a.bind.peer(b.pub).secret.Load() == nil || b.bind.peer(a.pub).secret.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no static-static secret 5 s after the peers were set, with no traffic")
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.mu.Lock()
	wgOn := a.peers[b.pub].wgOn
	a.mu.Unlock()
	if wgOn {
		t.Fatal("peer became a WireGuard peer without traffic")
	}
	want, err := curve25519.X25519(a.cfg.PrivateKey[:], b.pub[:])
	if err != nil {
		t.Fatal(err)
	}
	ss, ok := a.staticStatic(device.NoisePublicKey(a.pub), device.NoisePublicKey(b.pub))
	if !ok || !bytes.Equal(ss[:], want) {
		t.Fatalf("staticStatic = %x, %v; want %x, true", ss, ok, want)
	}
	if _, ok := a.staticStatic(device.NoisePublicKey(b.pub), device.NoisePublicKey(b.pub)); ok {
		t.Fatal("staticStatic answered for a private key that is not the device's")
	}

	roundTrip(t, a, b, 10*time.Second) // a first stream on secrets made ahead
}

// TestHandshakeWithoutStaticStaticSource: a device that computes the
// static-static secret itself (no source: an upstream wireguard-go peer
// does the same) shakes hands with one that takes it from the bind. Both
// directions: the patched X25519 of third_party/wireguard (a peer's
// precompute, ephemeral keys) must agree with the standard library's.
func TestHandshakeWithoutStaticStaticSource(t *testing.T) {
	for _, dir := range []string{"source dials", "no source dials"} {
		t.Run(dir, func(t *testing.T) {
			a := newTestTunnel(t, echo)
			b := newTestTunnel(t, echo)
			defer a.Close()
			defer b.Close()
			b.dev.SetStaticStatic(nil)
			from, to := a, b
			if dir == "no source dials" {
				from, to = b, a
			}
			link(t, a, b)
			roundTrip(t, from, to, 10*time.Second)
		})
	}
}
