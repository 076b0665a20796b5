// Package tcpserver is the accept loop of meshd's small test and bench
// services (echo, sink): each accepted connection runs a handler in its
// own goroutine, tracked so Close can end every connection and wait for
// every goroutine.
package tcpserver

import (
	"net"
	"sync"
	"sync/atomic"
)

// Server serves one listener with a handler per connection.
type Server struct {
	ln     net.Listener
	handle func(net.Conn)
	active atomic.Int64
	total  atomic.Int64
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu
	done  bool                  // guarded by mu
}

// Serve starts serving ln: handle runs for each accepted connection, which
// is closed when handle returns. The Server owns ln.
func Serve(ln net.Listener, handle func(net.Conn)) *Server {
	s := &Server{ln: ln, handle: handle, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.serve()
	return s
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Active is the number of connections being handled now.
func (s *Server) Active() int64 { return s.active.Load() }

// Total is the number of connections accepted so far.
func (s *Server) Total() int64 { return s.total.Load() }

func (s *Server) serve() {
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
		s.active.Add(1)
		s.total.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
			c.Close()
			s.active.Add(-1)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes every connection and waits for the
// handlers to return.
func (s *Server) Close() error {
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

// CloseWrite half-closes c when it is a TCP connection.
func CloseWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
