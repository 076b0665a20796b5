package tunnel

import (
	"net/netip"
	"sync/atomic"

	"github.com/meshd/meshd/internal/key"
	"golang.zx2c4.com/wireguard/conn"
)

// The conn.Endpoint of PathBind.

// Endpoint is a WireGuard endpoint: a peer (sent to on its current path)
// or, for packets from an address no peer is known at, just that address.
type Endpoint struct {
	Peer key.PublicKey
	Addr netip.AddrPort
	_    atomic.Bool // noCopy-ish: endpoints are shared by pointer
}

var _ conn.Endpoint = (*Endpoint)(nil)

func (e *Endpoint) ClearSrc()           {}
func (e *Endpoint) SrcToString() string { return "" }
func (e *Endpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e *Endpoint) DstIP() netip.Addr   { return e.Addr.Addr() }
func (e *Endpoint) DstToString() string {
	if !e.Peer.IsZero() {
		return e.Peer.Hex()
	}
	return e.Addr.String()
}
func (e *Endpoint) DstToBytes() []byte {
	if !e.Peer.IsZero() {
		return e.Peer[:]
	}
	b, _ := e.Addr.MarshalBinary()
	return b
}
