package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/ratelimit"
)

// ServerConfig configures a Server. A zero field means its default.
type ServerConfig struct {
	// ClusterKey is the mesh's shared key (16, 24 or 32 bytes); clients
	// prove that they know it. Required.
	ClusterKey []byte
	// PrivateKey, if set, is the relay node's WireGuard private key: the
	// server then proves it to clients and requires every client to prove
	// that it holds the private key of the public key it registers.
	PrivateKey key.PrivateKey
	// Logger receives one line per connection event, never per packet.
	// Default: discard.
	Logger *slog.Logger
	// Namer, if set, names an authenticated client's key in log lines
	// ("peer", the node name, as the node's other lines do); "" or nil
	// falls back to the key's short form.
	Namer func(key.PublicKey) string
	// QueueLen bounds each client's outbound queue, in packets (default
	// 512). A packet for a client whose queue is full is dropped and
	// counted in ServerStats.Dropped. Memory per client is bounded by
	// QueueLen packet buffers (2 KiB each for WireGuard-sized packets, 64
	// KiB for larger ones) plus 32 KiB of socket buffers.
	QueueLen int
	// MaxClients bounds authenticated clients (default 4096); a client
	// that authenticates beyond it is closed (a reconnect of a key already
	// connected replaces it and always fits).
	MaxClients int
	// MaxHandshakes bounds connections still in the handshake (default
	// 256), counted apart from clients so that unauthenticated
	// connections cannot take a real node's place. When it is reached the
	// oldest handshake is closed to make room, so a flood of idle
	// connections cannot keep a real node out for a whole HandshakeTimeout.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds handshakes from one IP address
	// (default 16); more are closed on accept.
	MaxHandshakesPerSource int
	// WriteTimeout closes a client whose socket does not accept a write
	// within it (default 5s).
	WriteTimeout time.Duration
	// HandshakeTimeout bounds the whole handshake (default 5s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a client that sends nothing, not even a ping, for
	// this long (default 30s; clients ping every second by default).
	IdleTimeout time.Duration
}

// DefaultServerConfig returns a config with every default filled in and
// no ClusterKey.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Logger:           slog.New(slog.DiscardHandler),
		QueueLen:         512,
		MaxClients:       4096,
		MaxHandshakes:    256,
		WriteTimeout:     5 * time.Second,
		HandshakeTimeout: 5 * time.Second,
		IdleTimeout:      30 * time.Second,
	}
}

// Validate reports whether c is usable (zero fields are fine).
func (c *ServerConfig) Validate() error {
	if err := ValidateClusterKey(c.ClusterKey); err != nil {
		return err
	}
	if c.QueueLen < 0 || c.MaxClients < 0 || c.MaxHandshakes < 0 || c.MaxHandshakesPerSource < 0 || c.WriteTimeout < 0 || c.HandshakeTimeout < 0 || c.IdleTimeout < 0 {
		return errors.New("relay: negative limit in server config")
	}
	return nil
}

func (c ServerConfig) withDefaults() ServerConfig {
	d := DefaultServerConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.QueueLen == 0 {
		c.QueueLen = d.QueueLen
	}
	if c.MaxClients == 0 {
		c.MaxClients = d.MaxClients
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = d.MaxHandshakes
	}
	if c.MaxHandshakesPerSource == 0 {
		c.MaxHandshakesPerSource = defaultHandshakesPerSource
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	return c
}

// ServerStats are a Server's counters since NewServer.
type ServerStats struct {
	Clients        int    // authenticated clients connected now
	Accepted       uint64 // connections that authenticated
	AuthFailures   uint64 // handshakes rejected for a wrong mac
	Received       uint64 // packets received from clients
	Forwarded      uint64 // packets written to their destination
	ForwardedBytes uint64 // packet bytes written to their destination
	Dropped        uint64 // packets dropped: destination queue full
	NoRoute        uint64 // packets dropped: destination not connected
	Handshakes     int    // connections in the handshake now
	Refused        uint64 // connections closed at accept or after auth: a cap was reached
	Evicted        uint64 // handshakes closed to make room for a newer connection
}

// Server is a relay server. Its methods are safe for concurrent use.
type Server struct {
	// Immutable after NewServer.
	cfg  ServerConfig
	log  *slog.Logger
	rand io.Reader // nonce source; tests make it deterministic

	// authKeys are the auth keys of every cluster key (rotation): a
	// client's MAC may use any. Replaced whole by SetClusterKeys.
	authKeys atomic.Pointer[[][]byte]

	// Counters, atomic.
	accepted, authFailures, received atomic.Uint64
	forwarded, forwardedBytes        atomic.Uint64
	dropped, noRoute                 atomic.Uint64
	refused, evicted                 atomic.Uint64

	// unauthLog gates the log lines unauthenticated connections cause
	// (failed handshakes, refusals): a burst of 5, then one per 10 s.
	unauthLog *ratelimit.Bucket
	unauthN   atomic.Uint64 // lines suppressed since the last one written

	// wg counts every goroutine the server starts. Add is called under mu
	// while !closed, or by a goroutine that is itself counted.
	wg sync.WaitGroup

	mu        sync.RWMutex
	closed    bool                     // guarded by mu
	listeners map[net.Listener]bool    // guarded by mu
	conns     map[*sconn]bool          // guarded by mu: every open connection
	clients   map[key.PublicKey]*sconn // guarded by mu: authenticated, by key
	shaking   map[*sconn]bool          // guarded by mu: connections in the handshake
	perSource map[netip.Addr]int       // guarded by mu: handshakes by source IP
}

// defaultHandshakesPerSource is ServerConfig.MaxHandshakesPerSource's default.
const defaultHandshakesPerSource = 16

// Log rate for unauthenticated events.
const (
	unauthLogBurst = 5
	unauthLogRate  = 0.1 // lines per second: one per 10 s, with the count suppressed
)

// NewServer returns a Server; call Serve to accept connections.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	srv := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		rand:      rand.Reader,
		listeners: make(map[net.Listener]bool),
		conns:     make(map[*sconn]bool),
		clients:   make(map[key.PublicKey]*sconn),
		shaking:   make(map[*sconn]bool),
		perSource: make(map[netip.Addr]int),
		unauthLog: ratelimit.NewBucket(unauthLogRate, unauthLogBurst),
	}
	srv.authKeys.Store(&[][]byte{authKey(cfg.ClusterKey)})
	return srv, nil
}

// Serve accepts connections on ln until ln fails or the server is closed,
// when it returns an error matching net.ErrClosed. Serve may be called for
// several listeners; Close closes all of them.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return fmt.Errorf("relay: serve: %w", net.ErrClosed)
	}
	s.listeners[ln] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("relay: serve: %w", net.ErrClosed)
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("relay: accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("relay: accept: %w", err)
		}
		backoff = 0
		s.accept(c)
	}
}

// accept starts serving c, or closes it when the server is closed or its
// source has too many handshakes open. When the handshake cap is reached the
// oldest handshake is closed to make room.
func (s *Server) accept(c net.Conn) {
	src := remoteIP(c)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	if s.perSource[src] >= s.cfg.MaxHandshakesPerSource {
		s.mu.Unlock()
		c.Close()
		s.refused.Add(1)
		s.unauthWarn("relay: connection refused: too many handshakes from this address",
			"remote", c.RemoteAddr().String(), "max", s.cfg.MaxHandshakesPerSource)
		return
	}
	var evict *sconn
	if len(s.shaking) >= s.cfg.MaxHandshakes {
		for sc := range s.shaking {
			if evict == nil || sc.start.Before(evict.start) {
				evict = sc
			}
		}
		s.handshakeDoneLocked(evict)
	}
	sc := newSconn(s, c)
	sc.src = src
	s.conns[sc] = true
	s.shaking[sc] = true
	s.perSource[src]++
	s.wg.Add(1)
	s.mu.Unlock()
	if evict != nil {
		s.evicted.Add(1)
		evict.close(errEvicted)
	}
	go func() {
		defer s.wg.Done()
		s.serveConn(sc)
	}()
}

// errEvicted closes a handshake to make room for a newer connection.
var errEvicted = errors.New("handshake closed to make room (too many handshakes)")

// errFull closes a client that authenticated while MaxClients are connected.
var errFull = errors.New("relay full")

// handshakeDone stops counting sc as a handshake (idempotent).
func (s *Server) handshakeDone(sc *sconn) {
	s.mu.Lock()
	s.handshakeDoneLocked(sc)
	s.mu.Unlock()
}

func (s *Server) handshakeDoneLocked(sc *sconn) {
	if !s.shaking[sc] {
		return
	}
	delete(s.shaking, sc)
	if s.perSource[sc.src]--; s.perSource[sc.src] <= 0 {
		delete(s.perSource, sc.src)
	}
}

// unauthWarn writes a WARN line caused by an unauthenticated connection, if
// the rate allows, with the number of lines suppressed since the last one.
func (s *Server) unauthWarn(msg string, args ...any) {
	s.unauthLine(slog.LevelWarn, msg, args...)
}

func (s *Server) unauthLine(level slog.Level, msg string, args ...any) {
	if !s.unauthLog.Allow(time.Now()) {
		s.unauthN.Add(1)
		return
	}
	if n := s.unauthN.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	s.log.Log(context.Background(), level, msg, args...)
}

// remoteIP is c's remote IP address (zero if it has none).
func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

func (s *Server) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// Close closes every listener and connection and waits for the server's
// goroutines. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	lns := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, ln)
	}
	conns := make([]*sconn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()

	for _, ln := range lns {
		ln.Close()
	}
	for _, sc := range conns {
		sc.close(net.ErrClosed)
	}
	s.wg.Wait()
	return nil
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() ServerStats {
	s.mu.RLock()
	n, h := len(s.clients), len(s.shaking)
	s.mu.RUnlock()
	return ServerStats{
		Clients:        n,
		Handshakes:     h,
		Refused:        s.refused.Load(),
		Evicted:        s.evicted.Load(),
		Accepted:       s.accepted.Load(),
		AuthFailures:   s.authFailures.Load(),
		Received:       s.received.Load(),
		Forwarded:      s.forwarded.Load(),
		ForwardedBytes: s.forwardedBytes.Load(),
		Dropped:        s.dropped.Load(),
		NoRoute:        s.noRoute.Load(),
	}
}

// lookup returns the connected client with key k, or nil.
func (s *Server) lookup(k key.PublicKey) *sconn {
	s.mu.RLock()
	sc := s.clients[k]
	s.mu.RUnlock()
	return sc
}

// register makes sc the route for its key, closing the connection it
// replaces. It fails when the server is closed (net.ErrClosed) or MaxClients
// other keys are connected (errFull).
func (s *Server) register(sc *sconn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	old := s.clients[sc.key]
	if old == nil && len(s.clients) >= s.cfg.MaxClients {
		s.mu.Unlock()
		return errFull
	}
	s.clients[sc.key] = sc
	s.mu.Unlock()
	if old != nil {
		old.close(ErrReplaced)
	}
	return nil
}

// unregister removes sc's route if it is still the current one for its key.
func (s *Server) unregister(sc *sconn) {
	s.mu.Lock()
	if s.clients[sc.key] == sc {
		delete(s.clients, sc.key)
	}
	s.mu.Unlock()
}

// serveConn runs one connection from handshake to close; it owns sc's
// writer goroutine and returns after it.
func (s *Server) serveConn(sc *sconn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
	}()
	err := s.handshake(sc)
	s.handshakeDone(sc)
	if err != nil {
		sc.close(err)
		s.logHandshakeFailure(sc, err)
		return
	}
	sc.grow()
	// Register before serverOK so that the client is routable as soon as
	// its Dial returns; packets for it wait in its queue meanwhile.
	if err := s.register(sc); err != nil {
		sc.close(err)
		if errors.Is(err, errFull) {
			s.refused.Add(1)
			s.log.Warn("relay: too many clients; authenticated client refused", "peer", s.peerName(sc.key), "remote", sc.remote,
				"key", sc.key.ShortString(), "max", s.cfg.MaxClients)
		}
		return
	}
	if err := s.finishHandshake(sc); err != nil {
		sc.close(err)
		s.unregister(sc)
		s.logHandshakeFailure(sc, err)
		return
	}
	s.accepted.Add(1)
	s.log.Info("relay: client connected", "peer", s.peerName(sc.key), "key", sc.key.ShortString(), "remote", sc.remote)

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		sc.writeLoop()
	}()
	err = sc.readLoop()
	sc.close(err)
	s.unregister(sc)
	<-writerDone
	sc.drain()
	s.logClosed(sc)
}

// peerName names an authenticated client for log lines: cfg.Namer's
// answer, else the key's short form.
func (s *Server) peerName(k key.PublicKey) string {
	if s.cfg.Namer != nil {
		if name := s.cfg.Namer(k); name != "" {
			return name
		}
	}
	return k.ShortString()
}

func (s *Server) logClosed(sc *sconn) {
	reason := sc.reason
	level := slog.LevelInfo
	switch {
	case errors.Is(reason, net.ErrClosed):
		level = slog.LevelDebug // server shutting down
	case errors.Is(reason, io.EOF):
		reason = errors.New("client disconnected")
	case errors.Is(reason, errWriteTimeout):
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "relay: client closed", "peer", s.peerName(sc.key), "key", sc.key.ShortString(), "remote", sc.remote,
		"reason", reason.Error(), "duration", time.Since(sc.start).Round(time.Millisecond),
		"rx", sc.rx.Load(), "tx", sc.tx.Load(), "dropped", sc.dropped.Load())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
