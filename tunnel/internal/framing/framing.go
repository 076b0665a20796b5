// Package framing gives yamux a connection that writes each frame whole:
// yamux's send loop writes a frame as two writes, header then body, which
// inside the tunnel cost two TCP segments, two WireGuard packets and two
// UDP sends per small message. A Conn holds a data frame's header back and
// writes it with its body (and a stream's open or accept window update
// with the frame that follows it), changing nothing of what is written.
// Its byte stream ends at the first failed read or write: a session never
// reads or writes out of place after one.
package framing

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// yamux frame header layout (github.com/hashicorp/yamux const.go): version,
// type, flags (2), stream ID (4), length (4). A data frame's length is the
// size of the body that follows.
const (
	yamuxHeaderSize       = 12
	yamuxTypeData         = 0
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 1
	yamuxFlagACK          = 2
)

// openHold is how long a stream's open (SYN) or accept (ACK) window
// update may wait for the frame that follows it.
const openHold = time.Millisecond

// Conn is the session's connection as yamux sees it; it cuts the
// packets per message. yamux's send loop writes each frame as two writes,
// header then body: on a TCP connection without Nagle that is two
// segments, two WireGuard packets and two UDP sends for every small
// message. Conn holds a data frame's header back and writes it with
// its body. It also holds a stream's open or accept window update (a bare
// header) for up to openHold: the open request (after a SYN) or the open
// response (after an ACK) follows at once, and they leave together. Other
// frames (window updates, pings) go out at once.
//
// yamux writes from its single send loop goroutine; the flush timer is the
// only other writer, and mu serializes the two (a write lock on the
// connection, like a buffered writer's).
type Conn struct {
	net.Conn

	mu       sync.Mutex
	held     []byte // frames (and a data header) not yet written
	wantBody bool   // held ends with a data header: the next Write is its body
	timer    *time.Timer
	err      error // a failed or short write: every later Write returns it

	rerr error         // the first error Read returned (receive loop only)
	rx   atomic.Uint64 // bytes read (Received)
}

// NewConn wraps c, the connection a yamux session runs over.
func NewConn(c net.Conn) *Conn {
	f := &Conn{Conn: c, held: make([]byte, 0, 4<<10)}
	f.timer = time.AfterFunc(time.Hour, f.timerFlush)
	f.timer.Stop()
	return f
}

// Read reads from the connection and counts what it read (Received).
// Once a Read has failed (io.EOF included) every later Read fails alike:
// the byte stream has ended, whatever the connection would return next.
// gVisor's TCP endpoint can return data after the io.EOF of a local Close
// (closed for receive, it still queues what the peer sends until its own
// FIN has left), and a reader going on would take it for the bytes that
// follow the ones it had (the session's frames out of place).
//
// Only the session's receive loop reads (one goroutine).
func (f *Conn) Read(p []byte) (int, error) {
	if f.rerr != nil {
		return 0, f.rerr
	}
	n, err := f.Conn.Read(p)
	f.rx.Add(uint64(n))
	if err != nil {
		f.rerr = err
	}
	return n, err
}

// Received is how many bytes have been read from the connection: while it
// grows, the peer's frames arrive, whether or not its answer to a
// particular ping has yet.
func (f *Conn) Received() uint64 { return f.rx.Load() }

// Write writes p, or holds it back for the frame that follows (see Conn).
// After a failed or short write every Write fails: the peer has part of a
// frame, and whatever followed it would be read out of place.
func (f *Conn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	if f.wantBody {
		f.wantBody = false
		return f.flush(p)
	}
	if len(p) == yamuxHeaderSize {
		typ, flags := p[1], binary.BigEndian.Uint16(p[2:4])
		switch {
		case typ == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0:
			f.held = append(f.held, p...)
			f.wantBody = true
			return len(p), nil
		case typ == yamuxTypeWindowUpdate && flags&^(yamuxFlagSYN|yamuxFlagACK) == 0 && flags != 0:
			if len(f.held) == 0 {
				f.timer.Reset(openHold)
			}
			f.held = append(f.held, p...)
			return len(p), nil
		}
	}
	return f.flush(p)
}

// flush writes what is held followed by p and reports how much of p was
// written; a failed or short write sticks (f.err). Called with mu held.
func (f *Conn) flush(p []byte) (int, error) {
	n, err := f.write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		f.err = err
	}
	return n, err
}

// write writes what is held followed by p and reports how much of p was
// written. Called with mu held.
func (f *Conn) write(p []byte) (int, error) {
	if len(f.held) == 0 {
		return f.Conn.Write(p)
	}
	f.timer.Stop()
	held := len(f.held)
	var (
		n   int
		err error
	)
	if tc, ok := f.Conn.(*net.TCPConn); ok && len(p) > 0 {
		// A kernel socket takes both in one writev, without a copy.
		bufs := net.Buffers{f.held, p}
		var n64 int64
		n64, err = bufs.WriteTo(tc)
		n = int(n64)
	} else {
		out := append(f.held, p...)
		n, err = f.Conn.Write(out)
		if cap(out) <= 64<<10 {
			f.held = out // keep a grown buffer, within reason
		}
	}
	f.held = f.held[:0]
	return max(n-held, 0), err
}

// Hold queues p to be written ahead of the next frame, or on its own
// within openHold if none follows: a session handshake's message (see
// tunnel/sessionauth.go) leaves in the same segment as the first yamux
// frames, and never waits longer than openHold.
func (f *Conn) Hold(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.held) == 0 {
		f.timer.Reset(openHold)
	}
	f.held = append(f.held, p...)
}

// timerFlush writes held open/accept updates that nothing followed.
func (f *Conn) timerFlush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.held) == 0 || f.wantBody || f.err != nil {
		return // written meanwhile, or the body is on its way
	}
	f.flush(nil) // a failure sticks: the next Write returns it
}

// Close stops the flush timer and closes the connection.
func (f *Conn) Close() error {
	f.timer.Stop()
	return f.Conn.Close()
}
