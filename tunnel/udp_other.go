//go:build !linux

package tunnel

import (
	"net"
	"net/netip"
)

// udpConn is the bind's socket; without Linux's GSO/GRO it sends and
// receives one datagram per call.
type udpConn struct{ c *net.UDPConn }

func newUDPConn(c *net.UDPConn, _ bool) *udpConn { return &udpConn{c: c} }

const oobSize = 0

func (u *udpConn) writeBatch(bufs [][]byte, dst netip.AddrPort) error {
	for _, b := range bufs {
		if _, err := u.c.WriteToUDPAddrPort(b, dst); err != nil {
			return err
		}
	}
	return nil
}

func (u *udpConn) read(buf, _ []byte) (n, seg int, from netip.AddrPort, err error) {
	n, from, err = u.c.ReadFromUDPAddrPort(buf)
	return n, n, from, err
}
