package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// copyBufSize is the size of pooled copy buffers.
const copyBufSize = 32 << 10

// smallBufSize is the read buffer of a generic connection that is not
// moving data (see copyGeneric).
const smallBufSize = 2 << 10

var (
	copyBufs  = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
)

// StartProxy copies a→b and b→a in two goroutines and returns at once.
// Half-close propagates: when one side's reads end cleanly, the other
// side's write half is closed and the reverse direction keeps flowing. An
// error in either direction, or ctx ending, aborts both. When both
// directions have ended, StartProxy closes a and b and calls done (if not
// nil) with the bytes copied each way and the first error.
//
// Idle connections are what a mesh holds most of, so a waiting direction
// holds no buffer: TCP connections wait for readability through their raw
// file descriptor and yamux streams with a zero-length read, and take a
// pooled buffer only to move data. The goroutine that set the connection
// up (and grew its stack doing so) does not stay around to wait either.
func StartProxy(ctx context.Context, a, b net.Conn, done func(aToB, bToA int64, err error)) {
	p := &proxy{a: a, b: b, done: done}
	p.pending.Store(2)
	p.stopCtx = context.AfterFunc(ctx, func() { p.abort(ctx.Err()) })
	go p.half(b, a, &p.aToB)
	go p.half(a, b, &p.bToA)
}

// Proxy is StartProxy that waits for both directions to end.
func Proxy(ctx context.Context, a, b net.Conn) (aToB, bToA int64, err error) {
	ended := make(chan struct{})
	StartProxy(ctx, a, b, func(x, y int64, e error) {
		aToB, bToA, err = x, y, e
		close(ended)
	})
	<-ended
	return aToB, bToA, err
}

// proxy is one running StartProxy.
type proxy struct {
	a, b       net.Conn
	done       func(aToB, bToA int64, err error)
	stopCtx    func() bool
	pending    atomic.Int32 // directions still copying
	aToB, bToA int64        // each written only by its own direction

	once  sync.Once
	first error
}

// abort ends both directions: deadlines in the past wake any blocked read
// or write.
func (p *proxy) abort(err error) {
	p.once.Do(func() {
		p.first = err
		past := time.Unix(1, 0)
		p.a.SetDeadline(past)
		p.b.SetDeadline(past)
	})
}

// half copies src to dst; the last direction to end closes both
// connections and reports.
func (p *proxy) half(dst, src net.Conn, total *int64) {
	*total = copyHalf(dst, src, p.abort)
	if p.pending.Add(-1) != 0 {
		return
	}
	p.stopCtx()
	p.a.Close()
	p.b.Close()
	if p.done != nil {
		// Both directions have ended: the counters are final and the
		// pending decrement orders them before this read.
		p.once.Do(func() {})
		p.done(p.aToB, p.bToA, p.first)
	}
}

// copyHalf copies src to dst; on a clean EOF it half-closes dst, on an
// error it aborts the whole proxy.
func copyHalf(dst, src net.Conn, abort func(error)) int64 {
	var (
		total int64
		rerr  error
	)
	write := func(b []byte) bool {
		if _, err := dst.Write(b); err != nil {
			abort(err)
			return false
		}
		total += int64(len(b))
		return true
	}
	switch s := src.(type) {
	case *net.TCPConn:
		rerr = copyFromTCP(s, write)
	case *yamux.Stream:
		rerr = copyFromStream(s, write)
	default:
		rerr = copyGeneric(src, write)
	}
	switch {
	case rerr == errWriteFailed:
	case rerr == io.EOF:
		if err := CloseWrite(dst); err != nil {
			abort(err)
		}
	case errors.Is(rerr, net.ErrClosed):
		abort(nil)
	default:
		abort(rerr)
	}
	return total
}

// errWriteFailed says the write side failed (and already aborted).
var errWriteFailed = errors.New("write failed")

// copyFromStream reads a yamux stream: a zero-length Read blocks until
// data (or the end) arrives without holding a buffer.
func copyFromStream(s *yamux.Stream, write func([]byte) bool) error {
	for {
		if _, err := s.Read(nil); err != nil {
			return err
		}
		bp := copyBufs.Get().(*[]byte)
		n, err := s.Read(*bp)
		ok := n == 0 || write((*bp)[:n])
		copyBufs.Put(bp)
		if !ok {
			return errWriteFailed
		}
		if err != nil {
			return err
		}
	}
}

// copyGeneric reads any net.Conn. An idle connection blocks in Read most
// of its life, so it reads into a small buffer and takes a large pooled
// one only while data is flowing (a read filled the small buffer).
func copyGeneric(src net.Conn, write func([]byte) bool) error {
	sp := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(sp)
	var big *[]byte
	defer func() {
		if big != nil {
			copyBufs.Put(big)
		}
	}()
	for {
		buf := *sp
		if big != nil {
			buf = *big
		}
		n, err := src.Read(buf)
		if n > 0 && !write(buf[:n]) {
			return errWriteFailed
		}
		switch {
		case big == nil && n == len(*sp):
			big = copyBufs.Get().(*[]byte)
		case big != nil && n < len(*sp):
			copyBufs.Put(big)
			big = nil
		}
		if err != nil {
			return err
		}
	}
}

// CloseWrite closes the write half of c: FIN on TCP, a yamux FIN on a
// stream (yamux's Close is a half-close: the stream stays readable).
func CloseWrite(c net.Conn) error {
	switch c := c.(type) {
	case *yamux.Stream:
		return c.Close()
	case interface{ CloseWrite() error }:
		return c.CloseWrite()
	}
	return c.Close()
}
