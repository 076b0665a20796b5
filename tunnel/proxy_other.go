//go:build !unix

package tunnel

import "net"

func copyFromTCP(c *net.TCPConn, d *direction) error {
	return copyGeneric(c, d.write)
}
