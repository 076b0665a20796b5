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
// nil) with the bytes copied each way and the first error. After an
// error a and b are reset, not closed (a TCP RST, a yamux RST): a close
// sends a FIN, which tells the far end its data is complete when it is
// not (see Reset).
//
// Idle connections are what a mesh holds most of, so a waiting direction
// holds no buffer and only a small stack: TCP connections wait for
// readability through their raw file descriptor and yamux streams with a
// zero-length read, taking a pooled buffer only to move data; and once a
// direction has moved data (and grown its goroutine's stack on the write
// path), the next wait is handed to a fresh goroutine (see direction).
func StartProxy(ctx context.Context, a, b net.Conn, done func(aToB, bToA int64, err error)) {
	startProxy(ctx, a, b, done, time.Now)
}

// startProxy is StartProxy with the clock that paces hand-offs (tests
// step it instead of sleeping).
func startProxy(ctx context.Context, a, b net.Conn, done func(aToB, bToA int64, err error), now func() time.Time) {
	p := &proxy{a: a, b: b, done: done, now: now}
	p.pending.Store(2)
	p.stopCtx = context.AfterFunc(ctx, func() { p.abort(ctx.Err()) })
	p.dirs[0] = direction{p: p, dst: b, src: a, total: &p.aToB}
	p.dirs[1] = direction{p: p, dst: a, src: b, total: &p.bToA}
	go p.dirs[0].run()
	go p.dirs[1].run()
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
	now        func() time.Time // paces hand-offs; called by one direction at a time
	stopCtx    func() bool
	pending    atomic.Int32 // directions still copying
	aToB, bToA int64        // each written only by its own direction
	dirs       [2]direction

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

// directionEnded: the last direction to end closes both connections and
// reports.
func (p *proxy) directionEnded() {
	if p.pending.Add(-1) != 0 {
		return
	}
	p.stopCtx()
	// Both directions have ended: first is final (abort set it before
	// its direction ended) and the pending decrement orders it, and the
	// counters, before these reads.
	p.once.Do(func() {})
	end := func(c net.Conn) error { return c.Close() }
	if p.first != nil {
		end = Reset
	}
	end(p.a)
	end(p.b)
	if p.done != nil {
		p.done(p.aToB, p.bToA, p.first)
	}
}

// direction copies src to dst. It runs in one goroutine at a time, but
// not always the same one: moving data grows a goroutine's stack (the
// write path through yamux or a socket is deep) and a parked goroutine
// keeps its stack, so when its source runs dry after moving data the
// wait is handed to a fresh goroutine (go d.run()) and the old one exits:
// an idle connection parks with new goroutines' 2 KiB stacks (about 2 KB
// less per connection and node). A busy direction hands off at most once
// per handOffEvery, so request/response traffic does not pay a goroutine
// start per message.
type direction struct {
	p         *proxy
	dst, src  net.Conn
	total     *int64
	handedOff time.Time // when the wait was last handed off
}

// handOffEvery is how often at most a direction hands its wait off.
const handOffEvery = time.Second

// handOff tells whether the wait for more should go to a fresh goroutine
// (and if so records that it will).
func (d *direction) handOff() bool {
	now := d.p.now()
	if now.Sub(d.handedOff) < handOffEvery {
		return false
	}
	d.handedOff = now
	return true
}

// errHandedOff says a fresh goroutine has taken over the direction.
var errHandedOff = errors.New("handed off")

// errWriteFailed says the write side failed (and already aborted).
var errWriteFailed = errors.New("write failed")

// run copies until src ends or the wait is handed off; on a clean EOF it
// half-closes dst, on an error it aborts the whole proxy.
func (d *direction) run() {
	var rerr error
	switch s := d.src.(type) {
	case *net.TCPConn:
		rerr = copyFromTCP(s, d)
	case *yamux.Stream:
		rerr = copyFromStream(s, d)
	default:
		rerr = copyGeneric(d.src, d.write)
	}
	switch {
	case rerr == errHandedOff:
		go d.run()
		return
	case rerr == errWriteFailed:
	case rerr == io.EOF:
		if err := CloseWrite(d.dst); err != nil {
			d.p.abort(err)
		}
	case errors.Is(rerr, net.ErrClosed):
		d.p.abort(nil)
	default:
		d.p.abort(rerr)
	}
	d.p.directionEnded()
}

// write writes b to dst; on an error it aborts the proxy.
func (d *direction) write(b []byte) bool {
	if _, err := d.dst.Write(b); err != nil {
		d.p.abort(err)
		return false
	}
	*d.total += int64(len(b))
	return true
}

// copyFromStream reads a yamux stream: a zero-length Read blocks until
// data (or the end) arrives without holding a buffer. yamux cannot say
// whether more is buffered without a blocking read, so after moving data
// it may return errHandedOff: the next wait belongs to a fresh goroutine.
func copyFromStream(s *yamux.Stream, d *direction) error {
	for {
		if _, err := s.Read(nil); err != nil {
			return err
		}
		bp := copyBufs.Get().(*[]byte)
		n, err := s.Read(*bp)
		ok := n == 0 || d.write((*bp)[:n])
		copyBufs.Put(bp)
		switch {
		case !ok:
			return errWriteFailed
		case err != nil:
			return err
		case d.handOff():
			return errHandedOff
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
// stream; c stays readable. (yamux's Close is a half-close too, but it
// also starts the stream close timeout, which cuts a half-closed stream
// whose answer takes longer; third_party/yamux adds CloseWrite.)
func CloseWrite(c net.Conn) error {
	if c, ok := c.(interface{ CloseWrite() error }); ok {
		return c.CloseWrite()
	}
	return c.Close()
}

// Reset ends c abruptly, so that its far end sees an error and not the
// clean end of a FIN: an RST on TCP (SO_LINGER 0), a yamux RST on a stream
// (the peer's reads fail with yamux.ErrConnectionReset). For a connection
// whose data is known incomplete: the other end of a proxy failed.
func Reset(c net.Conn) error {
	switch c := c.(type) {
	case *yamux.Stream:
		return c.Reset()
	case *net.TCPConn:
		c.SetLinger(0)
	}
	return c.Close()
}
