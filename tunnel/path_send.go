package tunnel

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshd/meshd/internal/key"
)

// PathBind's send side of conn.Bind (Send on the peer's current path) and the
// rest of the interface but Open (path_open.go): Close, SetMark,
// BatchSize, ParseEndpoint.

// Close closes the socket and stops probing.
func (b *PathBind) Close() error {
	b.mu.Lock()
	c, done := b.conn, b.done
	b.conn, b.done = nil, nil
	b.live.Store(nil)
	b.mu.Unlock()
	if c == nil {
		return nil
	}
	close(done)
	err := c.Close()
	b.wg.Wait()
	return err
}

// SetMark is a no-op.
func (b *PathBind) SetMark(uint32) error { return nil }

// BatchSize is how many packets wireguard-go hands Send, or takes from a
// receive function, at once.
func (b *PathBind) BatchSize() int { return batchSize }

// ParseEndpoint accepts a peer's hex public key (meshd's form) or ip:port.
func (b *PathBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if len(s) == 2*key.Len {
		if raw, err := hex.DecodeString(s); err == nil {
			var pub key.PublicKey
			copy(pub[:], raw)
			return &Endpoint{Peer: pub}, nil
		}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("tunnel: endpoint %q: %w", s, err)
	}
	return &Endpoint{Addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// Send sends to the endpoint's peer on its current path.
func (b *PathBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	u := b.live.Load()
	dst := e.Addr
	var r Relay
	var pp *peerPath
	if !e.Peer.IsZero() {
		if b.blocked(e.Peer) {
			return nil // dropped, as by a cut link
		}
		if p := b.peer(e.Peer); p != nil {
			pp = p
			c := p.choice.Load()
			if rr := b.relay.Load(); c.useRelay && rr != nil {
				r = rr.r
			} else if c.direct.IsValid() {
				dst = c.direct
			}
		}
	}
	if u == nil {
		return net.ErrClosed
	}
	if pp != nil {
		var n int
		for _, buf := range bufs {
			n += len(buf)
		}
		pp.tx.Add(uint64(n))
		if len(bufs) > 0 && len(bufs[0]) > 0 && (bufs[0][0] == wgInitiationType || bufs[0][0] == wgResponseType) &&
			b.noteSent(pp, e.Peer, bufs[0], time.Now().UnixNano()) {
			return nil
		}
	}
	if r != nil {
		for _, buf := range bufs {
			r.Send(e.Peer, buf) // drops when the relay queue is full, like a lossy link
		}
		return nil
	}
	if !dst.IsValid() {
		return nil // no path yet; WireGuard retries
	}
	return u.writeBatch(bufs, dst)
}
