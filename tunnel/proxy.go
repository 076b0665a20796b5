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

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

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
func copyHalf(dst, src net.Conn, abort func(error)) int64 {
	bp := copyBufs.Get().(*[]byte)
	// Hide ReadFrom/WriteTo so the pooled buffer is always the one used.
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	copyBufs.Put(bp)
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			abort(err)
		} else {
			abort(nil)
		}
		return n
	}
	if err := CloseWrite(dst); err != nil {
		abort(err)
	}
	return n
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
