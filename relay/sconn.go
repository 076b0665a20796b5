package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// Per-connection buffer sizes on the server: small, since a relay may hold
// thousands of connections; large reads and writes bypass them.
const (
	serverReadBuf  = 16 << 10
	serverWriteBuf = 16 << 10

	// Until it authenticates, a connection gets only what the handshake
	// needs (frames of at most maxHandshakeFrame) and no packet queue, so
	// that a flood of unauthenticated connections costs little: grow
	// gives it the rest.
	handshakeReadBuf  = maxHandshakeFrame + frameHeaderLen
	handshakeWriteBuf = 64
)

// errWriteTimeout marks a client closed because its socket stopped
// accepting writes.
var errWriteTimeout = errors.New("client not reading: write timeout")

// spkt is a packet queued for a client, from src.
type spkt struct {
	src key.PublicKey
	buf *pbuf
}

// sconn is the server side of one client connection. serveConn's goroutine
// reads (br); writeLoop's goroutine writes (bw) once the handshake is done.
type sconn struct {
	// Immutable after the handshake.
	s      *Server
	conn   net.Conn
	remote string
	src    netip.Addr // remote IP, for the per-source handshake count
	start  time.Time
	key    key.PublicKey
	// proved: the client proved it owns key; serverProof answers its nonce.
	proved      bool
	serverProof [macLen]byte
	br          *bufio.Reader // reader goroutine only
	bw          *bufio.Writer // handshake, then writeLoop only
	queue       chan spkt     // packets to write; never closed, senders never block
	ctrl        chan uint64   // pongs to write; never closed, senders never block
	done        chan struct{} // closed by close

	// Counters, atomic.
	rx, tx, dropped atomic.Uint64

	closeOnce sync.Once
	reason    error // written once by close before done is closed
}

func newSconn(s *Server, c net.Conn) *sconn {
	return &sconn{
		s:      s,
		conn:   c,
		remote: c.RemoteAddr().String(),
		start:  time.Now(),
		br:     bufio.NewReaderSize(c, handshakeReadBuf),
		bw:     bufio.NewWriterSize(c, handshakeWriteBuf),
		ctrl:   make(chan uint64, 4),
		done:   make(chan struct{}),
	}
}

// grow gives an authenticated connection its full buffers and packet
// queue. It runs on the reader goroutine before the connection is
// registered (so before anyone enqueues to it) and after the handshake's
// writes were flushed; bytes the client sent after its auth frame are kept.
func (sc *sconn) grow() {
	sc.queue = make(chan spkt, sc.s.cfg.QueueLen)
	sc.bw = bufio.NewWriterSize(sc.conn, serverWriteBuf)
	var r io.Reader = sc.conn
	if n := sc.br.Buffered(); n > 0 {
		pending, _ := sc.br.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(pending)), sc.conn)
	}
	sc.br = bufio.NewReaderSize(r, serverReadBuf)
}

// close records the first reason and closes the connection, which unblocks
// both goroutines. Safe to call from anywhere, any number of times.
func (sc *sconn) close(reason error) {
	sc.closeOnce.Do(func() {
		sc.reason = reason
		close(sc.done)
		sc.conn.Close()
	})
}

// enqueue queues p without blocking and reports whether it did.
func (sc *sconn) enqueue(p spkt) bool {
	select {
	case sc.queue <- p:
		return true
	default:
		return false
	}
}

// drain returns queued buffers to the pool once the writer has stopped.
// Packets enqueued later are left to the garbage collector.
func (sc *sconn) drain() {
	for {
		select {
		case p := <-sc.queue:
			putBuf(p.buf)
		default:
			return
		}
	}
}

// readLoop reads frames until an error and forwards packets. It never
// blocks on a destination: a full queue drops the packet.
func (sc *sconn) readLoop() error {
	s := sc.s
	idle := s.cfg.IdleTimeout
	var armed time.Time
	var small [8]byte
	for {
		// Re-arm the idle deadline at most 8 times per IdleTimeout.
		if now := time.Now(); now.Sub(armed) > idle/8 {
			sc.conn.SetReadDeadline(now.Add(idle))
			armed = now
		}
		t, n, err := readFrameHeader(sc.br, MaxFrame)
		if err != nil {
			if isTimeout(err) {
				return fmt.Errorf("idle for %v", idle)
			}
			return err
		}
		switch t {
		case frameSend:
			if n < key.Len {
				return fmt.Errorf("%w: send frame of %d bytes", ErrProtocol, n)
			}
			dst, err := readKey(sc.br)
			if err != nil {
				return err
			}
			n -= key.Len
			sc.rx.Add(1)
			s.received.Add(1)
			d := s.lookup(dst)
			if d == nil {
				s.noRoute.Add(1)
				if _, err := sc.br.Discard(n); err != nil {
					return unexpectedEOF(err)
				}
				continue
			}
			b := getBuf(n)
			if _, err := io.ReadFull(sc.br, b.b); err != nil {
				putBuf(b)
				return unexpectedEOF(err)
			}
			if !d.enqueue(spkt{src: sc.key, buf: b}) {
				putBuf(b)
				d.dropped.Add(1)
				s.dropped.Add(1)
			}
		case framePing:
			m := min(n, len(small))
			if _, err := io.ReadFull(sc.br, small[:m]); err != nil {
				return unexpectedEOF(err)
			}
			if _, err := sc.br.Discard(n - m); err != nil {
				return unexpectedEOF(err)
			}
			v, err := parseU64(small[:m])
			if err != nil {
				return err
			}
			select {
			case sc.ctrl <- v:
			default: // pongs pile up only if the client floods pings
			}
		default: // pong, or a type this version does not know: skip
			if _, err := sc.br.Discard(n); err != nil {
				return unexpectedEOF(err)
			}
		}
	}
}

// writeLoop writes queued packets and pongs, flushing when nothing else is
// pending, until done or a write error (which closes the connection).
func (sc *sconn) writeLoop() {
	s := sc.s
	timeout := s.cfg.WriteTimeout
	var armed time.Time
	for {
		var err error
		select {
		case <-sc.done:
			return
		case p := <-sc.queue:
			armed = armWriteDeadline(sc.conn, armed, timeout)
			n := len(p.buf.b)
			err = writeKeyFrame(sc.bw, frameRecv, &p.src, p.buf.b)
			putBuf(p.buf)
			if err == nil {
				sc.tx.Add(1)
				s.forwarded.Add(1)
				s.forwardedBytes.Add(uint64(n))
			}
		case v := <-sc.ctrl:
			armed = armWriteDeadline(sc.conn, armed, timeout)
			err = writeU64Frame(sc.bw, framePong, v)
		}
		if err == nil && len(sc.queue) == 0 && len(sc.ctrl) == 0 {
			err = sc.bw.Flush()
		}
		if err != nil {
			if isTimeout(err) {
				err = errWriteTimeout
			}
			sc.close(fmt.Errorf("write: %w", err))
			return
		}
	}
}

// armWriteDeadline pushes c's write deadline to now+timeout when the last
// push is older than timeout/4, so every write starts with at least 3/4 of
// the timeout ahead without a deadline syscall per packet.
func armWriteDeadline(c net.Conn, armed time.Time, timeout time.Duration) time.Time {
	now := time.Now()
	if now.Sub(armed) > timeout/4 {
		c.SetWriteDeadline(now.Add(timeout))
		return now
	}
	return armed
}
