package bench

import (
	"context"
	"net"

	"github.com/meshd/meshd/internal/tcpserver"
)

// LeanEcho is an echo service for many idle connections: a small buffer
// per connection (idle connections carry only MessageSize round trips),
// and a count of the connections it holds (Active, Total), so the bench
// knows how many connections an exporter in front of it carries.
type LeanEcho struct{ *tcpserver.Server }

// leanEchoBuf is the per-connection buffer of LeanEcho.
const leanEchoBuf = 512

// ListenLeanEcho starts a LeanEcho on addr (e.g. "127.0.0.1:0").
func ListenLeanEcho(addr string) (*LeanEcho, error) {
	lc := net.ListenConfig{KeepAliveConfig: keepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &LeanEcho{tcpserver.Serve(ln, leanEcho)}, nil
}

func leanEcho(c net.Conn) {
	buf := make([]byte, leanEchoBuf)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			tcpserver.CloseWrite(c)
			return
		}
	}
}
