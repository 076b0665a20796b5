package bench

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
)

// LeanEcho is an echo service for many idle connections: a small buffer
// per connection (idle connections carry only MessageSize round trips),
// and a count of the connections it holds, so the bench knows how many
// connections an exporter in front of it carries.
type LeanEcho struct {
	ln     net.Listener
	active atomic.Int64
	total  atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	done   bool
}

// leanEchoBuf is the per-connection buffer of LeanEcho.
const leanEchoBuf = 512

// ListenLeanEcho starts a LeanEcho on addr (e.g. "127.0.0.1:0").
func ListenLeanEcho(addr string) (*LeanEcho, error) {
	lc := net.ListenConfig{KeepAliveConfig: keepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &LeanEcho{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the listening address.
func (s *LeanEcho) Addr() string { return s.ln.Addr().String() }

// Active is the number of connections held now; Total the number accepted.
func (s *LeanEcho) Active() int64 { return s.active.Load() }

// Total is the number of connections accepted so far.
func (s *LeanEcho) Total() int64 { return s.total.Load() }

func (s *LeanEcho) serve() {
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
			buf := make([]byte, leanEchoBuf)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					if tc, ok := c.(*net.TCPConn); ok {
						tc.CloseWrite()
					}
					break
				}
			}
			c.Close()
			s.active.Add(-1)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops the server and closes every connection.
func (s *LeanEcho) Close() error {
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
