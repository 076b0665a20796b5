//go:build !unix

package tunnel

import "net"

func copyFromTCP(c *net.TCPConn, write func([]byte) bool) error {
	return copyGeneric(c, write)
}
