package bench

import (
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"

	"github.com/meshd/meshd/internal/tcpserver"
)

// Sink is a TCP service that discards what it reads. When the client
// half-closes, it answers with the number of bytes it received on that
// connection (8 bytes, big-endian) and closes: the client learns how many
// bytes really arrived, so throughput through a buffering proxy is
// measured end to end.
type Sink struct {
	*tcpserver.Server
	total atomic.Int64
}

// ListenSink starts a sink on addr (e.g. "127.0.0.1:0").
func ListenSink(addr string) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Sink{}
	s.Server = tcpserver.Serve(ln, s.handle)
	return s, nil
}

// Bytes is the total number of bytes received so far.
func (s *Sink) Bytes() int64 { return s.total.Load() }

func (s *Sink) handle(c net.Conn) {
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		s.total.Add(int64(k))
		if err != nil {
			if err == io.EOF {
				var ack [8]byte
				binary.BigEndian.PutUint64(ack[:], uint64(n))
				c.Write(ack[:])
			}
			return
		}
	}
}
