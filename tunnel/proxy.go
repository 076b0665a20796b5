package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// copyBufSize is the size of pooled copy buffers.
const copyBufSize = 32 << 10

// smallBufSize is the read buffer of a connection that is not moving data.
const smallBufSize = 2 << 10

var (
	copyBufs  = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
)

// Proxy copies a→b and b→a until both directions have ended, propagating
// half-close: when one side's reads end cleanly, the other side's write half
// is closed and the reverse direction keeps flowing. An error in either
// direction, or ctx ending, aborts both. Proxy closes a and b before it
// returns, and reports the bytes copied each way.
func Proxy(ctx context.Context, a, b net.Conn) (aToB, bToA int64, err error) {
	var (
		once  sync.Once
		first error
	)
	abort := func(err error) {
		once.Do(func() {
			first = err
			past := time.Unix(1, 0)
			a.SetDeadline(past)
			b.SetDeadline(past)
		})
	}
	stop := context.AfterFunc(ctx, func() { abort(ctx.Err()) })
	defer stop()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bToA = copyHalf(a, b, abort)
	}()
	aToB = copyHalf(b, a, abort)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA, first
}

// copyHalf copies src to dst; on a clean EOF it half-closes dst, on an
// error it aborts the whole proxy.
//
// An idle connection blocks in Read most of its life, so it reads into a
// small buffer and takes a large pooled one only while data is flowing
// (a read filled the small buffer), giving it back when the flow stops:
// idle connections cost small buffers, busy ones copy in large chunks.
func copyHalf(dst, src net.Conn, abort func(error)) int64 {
	sp := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(sp)
	var big *[]byte
	defer func() {
		if big != nil {
			copyBufs.Put(big)
		}
	}()
	var total int64
	for {
		buf := *sp
		if big != nil {
			buf = *big
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				abort(werr)
				return total
			}
			total += int64(n)
		}
		switch {
		case big == nil && n == len(*sp):
			big = copyBufs.Get().(*[]byte)
		case big != nil && n < len(*sp):
			copyBufs.Put(big)
			big = nil
		}
		if rerr == io.EOF {
			if err := CloseWrite(dst); err != nil {
				abort(err)
			}
			return total
		}
		if rerr != nil {
			if errors.Is(rerr, net.ErrClosed) {
				abort(nil)
			} else {
				abort(rerr)
			}
			return total
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
