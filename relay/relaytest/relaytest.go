// Package relaytest runs an in-process relay server on loopback for tests
// of packages that use the relay (tunnel, node), in the manner of
// net/http/httptest: Start serves a relay.Server on 127.0.0.1:0 and stops
// it when the test ends, checking that Serve returned net.ErrClosed; Dial
// connects a relay.Client to it, which is a tunnel.Relay (checked at
// compile time below).
package relaytest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/relay"
	"github.com/meshd/meshd/tunnel"
)

// ClusterKey is the cluster key Start uses when the config has none.
var ClusterKey = bytes.Repeat([]byte{0x42}, 32)

var _ tunnel.Relay = (*relay.Client)(nil)

// Server is a relay server serving on loopback.
type Server struct {
	*relay.Server
	Addr       string // host:port of the listener
	ClusterKey []byte // the key clients must present
}

// Start starts a relay server from cfg (ClusterKey defaults to
// ClusterKey) on a free loopback port. It is closed when t ends.
func Start(t testing.TB, cfg relay.ServerConfig) *Server {
	t.Helper()
	if cfg.ClusterKey == nil {
		cfg.ClusterKey = ClusterKey
	}
	s, err := relay.NewServer(cfg)
	if err != nil {
		t.Fatalf("relaytest: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relaytest: listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; !errors.Is(err, net.ErrClosed) {
			t.Errorf("relaytest: Serve returned %v, want net.ErrClosed", err)
		}
	})
	return &Server{Server: s, Addr: ln.Addr().String(), ClusterKey: cfg.ClusterKey}
}

// Dial connects a client registered as pub, delivering relayed packets to
// onPacket (nil drops them), with the server's cluster key; mod may change
// the config further. The client is closed when t ends.
func (s *Server) Dial(t testing.TB, pub key.PublicKey, onPacket func(from key.PublicKey, pkt []byte), mod ...func(*relay.ClientConfig)) *relay.Client {
	t.Helper()
	cfg := relay.ClientConfig{ClusterKey: s.ClusterKey, PublicKey: pub, OnPacket: onPacket}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, s.Addr, cfg)
	if err != nil {
		t.Fatalf("relaytest: dial %s: %v", s.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
