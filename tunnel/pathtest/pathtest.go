// Package pathtest provides test doubles for the tunnel's path layer, in
// the manner of wireguard-go's conn/bindtest: a Hub is an in-memory relay,
// and each Port on it satisfies tunnel.Relay, so a test can give
// PathBinds (or Tunnels) a relay path without a relay server, a socket or
// a goroutine. A packet sent on a port is copied and handed, synchronously,
// to the deliver function of the port its destination key attached; Cut
// makes the hub drop everything, as a failed relay would.
package pathtest

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/tunnel"
)

// ErrUnknownPeer is returned by Send to a key no port is attached for
// (the relay server drops such packets too; the error is for tests).
var ErrUnknownPeer = errors.New("pathtest: no port for the destination key")

// Hub is an in-memory relay: it forwards packets between its ports by
// destination public key. The zero value is not usable; use NewHub.
type Hub struct {
	mu    sync.Mutex
	ports map[key.PublicKey]*Port // guarded by mu

	cut                atomic.Bool
	delivered, dropped atomic.Uint64
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{ports: make(map[key.PublicKey]*Port)} }

// Port is one node's connection to a Hub: Send forwards to other ports.
type Port struct {
	hub     *Hub
	pub     key.PublicKey
	deliver func(from key.PublicKey, pkt []byte)
}

var _ tunnel.Relay = (*Port)(nil)

// Attach connects the node with key pub: packets sent to pub are passed to
// deliver (such as PathBind.DeliverRelay or Tunnel.DeliverRelay), which
// must not block and must not keep pkt. Attaching a key again replaces
// its port.
func (h *Hub) Attach(pub key.PublicKey, deliver func(from key.PublicKey, pkt []byte)) *Port {
	p := &Port{hub: h, pub: pub, deliver: deliver}
	h.mu.Lock()
	h.ports[pub] = p
	h.mu.Unlock()
	return p
}

// Detach disconnects pub: packets to it are dropped from now on.
func (h *Hub) Detach(pub key.PublicKey) {
	h.mu.Lock()
	delete(h.ports, pub)
	h.mu.Unlock()
}

// Cut makes the hub drop every packet (true) or forward again (false).
func (h *Hub) Cut(cut bool) { h.cut.Store(cut) }

// Delivered and Dropped count packets forwarded and dropped (cut, or no
// port for the destination).
func (h *Hub) Delivered() uint64 { return h.delivered.Load() }
func (h *Hub) Dropped() uint64   { return h.dropped.Load() }

// Send forwards a copy of pkt to the port attached for to. It never
// blocks; while the hub is cut the packet is dropped and Send returns nil,
// like a lossy link.
func (p *Port) Send(to key.PublicKey, pkt []byte) error {
	h := p.hub
	h.mu.Lock()
	dst := h.ports[to]
	h.mu.Unlock()
	switch {
	case h.cut.Load():
		h.dropped.Add(1)
		return nil
	case dst == nil:
		h.dropped.Add(1)
		return ErrUnknownPeer
	}
	cp := make([]byte, len(pkt))
	copy(cp, pkt)
	dst.deliver(p.pub, cp)
	h.delivered.Add(1)
	return nil
}
