// Package echo is a TCP echo service for the demo and the tests: it copies
// every byte back and honours half-close (after the client's FIN it
// finishes the echo and sends its own FIN).
package echo

import (
	"io"
	"net"

	"github.com/meshd/meshd/internal/tcpserver"
)

// Server echoes every connection accepted on its listener.
type Server struct{ *tcpserver.Server }

// Listen starts an echo server on addr (e.g. "127.0.0.1:0").
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{tcpserver.Serve(ln, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
		tcpserver.CloseWrite(c)
	})}, nil
}
