package relay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

func newPriv(t *testing.T) key.PrivateKey {
	t.Helper()
	k, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestOwnershipSteps: a relay with its node's private key admits only
// clients that prove they hold the private key of the key they register,
// and a client told the relay's key refuses any other relay (README "Identity and policy").
func TestOwnershipSteps(t *testing.T) {
	relayPriv, otherPriv := newPriv(t), newPriv(t)
	_, addr, _ := startServer(t, ServerConfig{PrivateKey: relayPriv})
	_, legacyAddr, _ := startServer(t, ServerConfig{})
	victim := newPriv(t)

	try := func(at string, cfg ClientConfig) error {
		t.Helper()
		cfg.ClusterKey = testClusterKey
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := Dial(ctx, at, cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, s := range []struct {
		what string
		at   string
		cfg  ClientConfig
		want error // nil: connects
	}{
		{"proves its key, checks the relay", addr, ClientConfig{PublicKey: victim.Public(), PrivateKey: victim, RelayKey: relayPriv.Public()}, nil},
		{"proves its key, relay unchecked", addr, ClientConfig{PublicKey: victim.Public(), PrivateKey: victim}, nil},
		{"no proof", addr, ClientConfig{PublicKey: victim.Public()}, ErrAuthFailed},
		{"expects another relay", addr, ClientConfig{PublicKey: victim.Public(), PrivateKey: victim, RelayKey: otherPriv.Public()}, ErrRelayIdentity},
		{"relay proves nothing", legacyAddr, ClientConfig{PublicKey: victim.Public(), PrivateKey: victim, RelayKey: relayPriv.Public()}, ErrRelayIdentity},
		{"legacy relay, legacy client", legacyAddr, ClientConfig{PublicKey: victim.Public()}, nil},
	} {
		err := try(s.at, s.cfg)
		switch {
		case s.want == nil && err != nil:
			t.Errorf("%s: %v", s.what, err)
		case s.want != nil && !errors.Is(err, s.want):
			t.Errorf("%s: %v, want %v", s.what, err, s.want)
		}
	}
	if err := (&ClientConfig{ClusterKey: testClusterKey, PublicKey: victim.Public(), PrivateKey: otherPriv}).Validate(); err == nil {
		t.Error("a private key of another public key passed Validate")
	}
}

// TestNoDisplacementWithoutKey: an attacker with the cluster key that
// registers a connected victim's public key, with a proof made from its
// own private key, is refused, and the victim stays connected.
func TestNoDisplacementWithoutKey(t *testing.T) {
	relayPriv, victimPriv, attacker := newPriv(t), newPriv(t), newPriv(t)
	_, addr, _ := startServer(t, ServerConfig{PrivateKey: relayPriv})
	victim := dial(t, addr, victimPriv.Public(), nil, func(c *ClientConfig) { c.PrivateKey = victimPriv; c.RelayKey = relayPriv.Public() })

	r := rawDial(t, addr)
	r.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, maxHandshakeFrame)
	typ, p, err := readFrame(r.br, buf)
	if err != nil || typ != frameServerHello {
		t.Fatalf("serverHello: %v %v", typ, err)
	}
	h, _ := parseServerHello(p)
	if h.server != relayPriv.Public() {
		t.Fatalf("serverHello announces %s, want the relay's key", h.server.ShortString())
	}
	pub := victimPriv.Public()
	a := clientAuth{version: ProtocolVersion, pub: pub, mac: authMAC(authKey(testClusterKey), &h.nonce, pub), hasProof: true}
	a.owner = proofMAC(sharedKey(attacker, h.server), ownerLabel, &h.nonce, pub)
	writeFrame(r.bw, frameClientAuth, a.marshal())
	r.bw.Flush()
	expectClosed(t, r, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	select {
	case <-victim.Done():
		t.Fatalf("the victim was displaced: %v", victim.Err())
	default:
	}
}
