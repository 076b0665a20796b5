package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
)

// yamux frame header layout (github.com/hashicorp/yamux const.go): version,
// type, flags (2), stream ID (4), length (4). A data frame's length is the
// size of the body that follows.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

// frameConn is the session's connection as yamux sees it. yamux's send
// loop writes each frame as two writes, header then body; on a TCP
// connection without Nagle that is two segments, two WireGuard packets and
// two UDP sends for every small message. frameConn holds back a data
// frame's header and writes it together with its body: one segment per
// small frame. Other frames (window updates, pings) have no body and go
// out at once. yamux writes from a single goroutine; the mutex only makes
// misuse safe.
type frameConn struct {
	net.Conn

	mu  sync.Mutex
	hdr []byte // a held data frame header, or nil
	buf []byte // header + body scratch
}

func newFrameConn(c net.Conn) *frameConn {
	return &frameConn{Conn: c, buf: make([]byte, 0, 4<<10)}
}

func (f *frameConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hdr == nil {
		if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
			f.hdr = append(f.buf[:0], p...)
			return len(p), nil
		}
		return f.Conn.Write(p)
	}
	// p is the body of the held header.
	if tc, ok := f.Conn.(*net.TCPConn); ok {
		// A kernel socket takes both in one writev, without a copy.
		bufs := net.Buffers{f.hdr, p}
		f.hdr = nil
		n, err := bufs.WriteTo(tc)
		return max(int(n)-yamuxHeaderSize, 0), err
	}
	out := append(f.hdr, p...)
	f.hdr = nil
	n, err := f.Conn.Write(out)
	if cap(out) <= 64<<10 {
		f.buf = out[:0] // keep a grown buffer for the next frame, within reason
	}
	n -= yamuxHeaderSize
	if n < 0 {
		n = 0
	}
	return n, err
}
