package bench

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Sink is a TCP service that discards what it reads. When the client
// half-closes, it answers with the number of bytes it received on that
// connection (8 bytes, big-endian) and closes: the client learns how many
// bytes really arrived, so throughput through a buffering proxy is
// measured end to end.
type Sink struct {
	ln    net.Listener
	total atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

// ListenSink starts a sink on addr (e.g. "127.0.0.1:0").
func ListenSink(addr string) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Sink{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the listening address.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Bytes is the total number of bytes received so far.
func (s *Sink) Bytes() int64 { return s.total.Load() }

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
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
					break
				}
			}
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops the sink and closes every connection.
func (s *Sink) Close() error {
	s.mu.Lock()
	s.done = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}
