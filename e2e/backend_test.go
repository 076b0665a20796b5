package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/tcpserver"
)

// maxRecorded bounds the per-connection records a backend keeps.
const maxRecorded = 4096

// digestMagic starts a connection in digest mode: the backend reads to EOF
// and only then answers "<hex SHA-256> <length>\n" of what followed the
// magic, and closes. Such a reply can only come back through the mesh if
// the client's half-close reached the backend and the return direction
// stayed open.
var digestMagic = []byte("DIGEST\n")

// backend is an echo server like internal/echo (it copies every byte back
// and honours half-close) that also counts the connections that carried
// data (health checks connect and close without sending anything) and
// records the SHA-256 of what each connection sent it.
type backend struct {
	*tcpserver.Server

	dataConns atomic.Int64 // connections that sent at least one byte

	mu     sync.Mutex
	hashes map[string]int64 // guarded by mu; hex SHA-256 of a connection's input -> its length
}

// startBackend starts a backend on addr ("127.0.0.1:0" for any port) and
// closes it at the end of the test.
func startBackend(t *testing.T, addr string) *backend {
	t.Helper()
	var ln net.Listener
	var err error
	// Re-binding an address just closed may need a moment.
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("backend listen %s: %v", addr, err)
	}
	b := &backend{hashes: map[string]int64{}}
	b.Server = tcpserver.Serve(ln, b.handle)
	t.Cleanup(func() { b.Close() })
	return b
}

func (b *backend) handle(c net.Conn) {
	// A connection lives at most this long: every test finishes earlier.
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	br := bufio.NewReaderSize(c, 32<<10)
	if p, _ := br.Peek(len(digestMagic)); bytes.Equal(p, digestMagic) {
		b.dataConns.Add(1)
		br.Discard(len(digestMagic))
		h := sha256.New()
		n, err := io.Copy(h, br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%x %d\n", h.Sum(nil), n)
		return
	}
	h := sha256.New()
	var n int64
	buf := make([]byte, 32<<10)
	for {
		k, rerr := br.Read(buf)
		if k > 0 {
			if n == 0 {
				b.dataConns.Add(1)
			}
			n += int64(k)
			h.Write(buf[:k])
			if _, werr := c.Write(buf[:k]); werr != nil {
				return
			}
		}
		if rerr != nil {
			break // EOF (half-close) or error
		}
	}
	// Record before our FIN so that a client that saw EOF also sees the record.
	if n > 0 {
		b.mu.Lock()
		if len(b.hashes) < maxRecorded {
			b.hashes[hex.EncodeToString(h.Sum(nil))] = n
		}
		b.mu.Unlock()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// received reports whether some connection sent exactly the data with this
// SHA-256 and length.
func (b *backend) received(sum []byte, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	got, ok := b.hashes[hex.EncodeToString(sum)]
	return ok && got == n
}
