package tunnel_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/relay"
	"github.com/meshd/meshd/relay/relaytest"
	"github.com/meshd/meshd/tunnel"
	"github.com/meshd/meshd/tunnel/pathtest"
)

type got struct {
	from key.PublicKey
	pkt  []byte
}

// openBind opens a probing bind for self on loopback that knows peer (no
// direct address: it starts on the relay) and returns the packets its relay
// receive function hands WireGuard.
func openBind(t *testing.T, self, peer key.PublicKey) (*tunnel.PathBind, <-chan got) {
	t.Helper()
	b := tunnel.NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), self, []byte("0123456789abcdef"),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	b.SetPeer(peer, netip.AddrPort{})
	out := make(chan got, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs, sizes, eps := [][]byte{make([]byte, 2048)}, make([]int, 1), make([]conn.Endpoint, 1)
		for {
			n, err := fns[1](bufs, sizes, eps)
			if err != nil {
				return
			}
			for i := range n {
				out <- got{eps[i].(*tunnel.Endpoint).Peer, bytes.Clone(bufs[i][:sizes[i]])}
			}
		}
	}()
	t.Cleanup(func() { b.Close(); <-done })
	return b, out
}

func expect(t *testing.T, ch <-chan got, from key.PublicKey, pkt []byte) {
	t.Helper()
	select {
	case g := <-ch:
		if g.from != from || !bytes.Equal(g.pkt, pkt) {
			t.Fatalf("received %q from %v, want %q from %v", g.pkt, g.from, pkt, from)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%q not received", pkt)
	}
}

func expectNone(t *testing.T, ch <-chan got, what string) {
	t.Helper()
	select {
	case g := <-ch:
		t.Fatalf("%s: received %q from %v", what, g.pkt, g.from)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRelayPathInMemory drives two binds through the public API over the
// in-memory relay: a new peer with no direct address is sent to on the
// relay, named by key on arrival and counted both ways; a black hole drops
// relayed packets in either direction; a cut relay loses packets.
func TestRelayPathInMemory(t *testing.T) {
	ka, kb := key.PublicKey{1}, key.PublicKey{2}
	a, _ := openBind(t, ka, kb)
	b, atB := openBind(t, kb, ka)
	hub := pathtest.NewHub()
	a.SetRelay(hub.Attach(ka, a.DeliverRelay), "hub")
	b.SetRelay(hub.Attach(kb, b.DeliverRelay), "hub")
	if path, via := a.Path(kb); path != "relay" || via != "hub" {
		t.Fatalf("path to a new peer: %s via %q, want relay via hub", path, via)
	}
	if err := a.Send([][]byte{[]byte("one"), []byte("two!")}, &tunnel.Endpoint{Peer: kb}); err != nil {
		t.Fatal(err)
	}
	expect(t, atB, ka, []byte("one"))
	expect(t, atB, ka, []byte("two!"))
	if tx, _ := a.Bytes(kb); tx != 7 {
		t.Fatalf("a counted %d bytes sent to b, want 7", tx)
	}
	if _, rx := b.Bytes(ka); rx != 7 {
		t.Fatalf("b counted %d bytes from a, want 7", rx)
	}

	b.SetBlocked(map[key.PublicKey]bool{ka: true})
	a.Send([][]byte{[]byte("in")}, &tunnel.Endpoint{Peer: kb})
	expectNone(t, atB, "b black-holes a, a sends")
	a.SetBlocked(map[key.PublicKey]bool{kb: true})
	b.SetBlocked(nil)
	a.Send([][]byte{[]byte("out")}, &tunnel.Endpoint{Peer: kb})
	expectNone(t, atB, "a black-holes b, a sends")
	if n := hub.Delivered(); n != 3 {
		t.Fatalf("hub delivered %d packets, want 3 (a black hole on the sender sends nothing)", n)
	}
	a.SetBlocked(nil)

	hub.Cut(true)
	a.Send([][]byte{[]byte("lost")}, &tunnel.Endpoint{Peer: kb})
	expectNone(t, atB, "relay cut")
	hub.Cut(false)
	a.Send([][]byte{[]byte("back")}, &tunnel.Endpoint{Peer: kb})
	expect(t, atB, ka, []byte("back"))
	if hub.Dropped() != 1 {
		t.Fatalf("hub dropped %d packets, want 1", hub.Dropped())
	}

	a.SetRelay(nil, "")
	if path, _ := a.Path(kb); path != "none" {
		t.Fatalf("path with no relay and no direct address: %s, want none", path)
	}
}

// TestRelayPathServer: the same path over a real relay server on loopback
// (relaytest), with relay.Client as the bind's tunnel.Relay.
func TestRelayPathServer(t *testing.T) {
	ka, kb := key.PublicKey{1}, key.PublicKey{2}
	a, _ := openBind(t, ka, kb)
	b, atB := openBind(t, kb, ka)
	srv := relaytest.Start(t, relay.ServerConfig{})
	a.SetRelay(srv.Dial(t, ka, a.DeliverRelay), srv.Addr)
	b.SetRelay(srv.Dial(t, kb, b.DeliverRelay), srv.Addr)
	if path, via := a.Path(kb); path != "relay" || via != srv.Addr {
		t.Fatalf("path: %s via %q, want relay via %s", path, via, srv.Addr)
	}
	if err := a.Send([][]byte{[]byte("hello")}, &tunnel.Endpoint{Peer: kb}); err != nil {
		t.Fatal(err)
	}
	expect(t, atB, ka, []byte("hello"))
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Forwarded != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := srv.Stats(); st.Forwarded != 1 {
		t.Fatalf("relay forwarded %d packets, want 1", st.Forwarded)
	}
}
