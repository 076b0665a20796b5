package tunnel

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// UDPBind is a conn.Bind on one UDP socket bound to a fixed address
// (tunnel.listen), unlike conn.StdNetBind which binds every interface.
// Endpoints are plain UDP addresses.
//
// Open may be called again after Close (wireguard-go re-binds on Up).
type UDPBind struct {
	addr netip.AddrPort // immutable

	// blocked holds addresses whose packets are dropped both ways (a drill's
	// black hole); nil or empty: nothing is dropped.
	blocked atomic.Pointer[map[netip.AddrPort]struct{}]

	mu   sync.Mutex
	conn *net.UDPConn // guarded by mu; nil when closed
}

// SetBlocked makes the bind drop every packet to or from the given
// addresses (nil: none), as if the link to them were cut.
func (b *UDPBind) SetBlocked(addrs map[netip.AddrPort]struct{}) {
	if len(addrs) == 0 {
		b.blocked.Store(nil)
		return
	}
	b.blocked.Store(&addrs)
}

func (b *UDPBind) isBlocked(ap netip.AddrPort) bool {
	m := b.blocked.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[ap]
	return ok
}

var _ conn.Bind = (*UDPBind)(nil)

// NewUDPBind returns a Bind that listens on addr when opened.
func NewUDPBind(addr netip.AddrPort) *UDPBind { return &UDPBind{addr: addr} }

// LocalAddr returns the bound address, or the configured one when closed.
func (b *UDPBind) LocalAddr() netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return b.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return b.addr
}

// Open binds the socket. The port wireguard-go asks for is used only when
// the configured address has port 0.
func (b *UDPBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	addr := b.addr
	if addr.Port() == 0 {
		addr = netip.AddrPortFrom(addr.Addr(), port)
	}
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, 0, fmt.Errorf("tunnel: listen udp %s: %w", addr, err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	b.conn = c
	recv := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			n, from, err := c.ReadFromUDPAddrPort(packets[0])
			if err != nil {
				return 0, err
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if b.isBlocked(from) {
				continue
			}
			sizes[0] = n
			eps[0] = UDPEndpoint{Dst: from}
			return 1, nil
		}
	}
	return []conn.ReceiveFunc{recv}, uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}

// Close closes the socket; pending receives return net.ErrClosed.
func (b *UDPBind) Close() error {
	b.mu.Lock()
	c := b.conn
	b.conn = nil
	b.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Close()
}

// SetMark is a no-op: meshd does not use fwmark routing.
func (b *UDPBind) SetMark(uint32) error { return nil }

// BatchSize is 1: one packet per syscall.
func (b *UDPBind) BatchSize() int { return 1 }

// ParseEndpoint parses "ip:port".
func (b *UDPBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("tunnel: endpoint %q: %w", s, err)
	}
	return UDPEndpoint{Dst: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// Send writes each buffer as one datagram to ep.
func (b *UDPBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	ue, ok := ep.(UDPEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	c := b.conn
	b.mu.Unlock()
	if c == nil {
		return net.ErrClosed
	}
	if b.isBlocked(ue.Dst) {
		return nil // dropped on the floor, as by a cut link
	}
	for _, buf := range bufs {
		if _, err := c.WriteToUDPAddrPort(buf, ue.Dst); err != nil {
			return err
		}
	}
	return nil
}

// UDPEndpoint is a peer's UDP address.
type UDPEndpoint struct{ Dst netip.AddrPort }

var _ conn.Endpoint = UDPEndpoint{}

func (e UDPEndpoint) ClearSrc()           {}
func (e UDPEndpoint) SrcToString() string { return "" }
func (e UDPEndpoint) DstToString() string { return e.Dst.String() }
func (e UDPEndpoint) DstIP() netip.Addr   { return e.Dst.Addr() }
func (e UDPEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e UDPEndpoint) DstToBytes() []byte {
	b, _ := e.Dst.MarshalBinary()
	return b
}
