package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/testutil"
)

// How a stream ends: a stream whose data is cut short must end with an
// error for its reader, never with the io.EOF of a complete stream. (yamux
// upstream returns io.EOF when the session ends under a stream, and when
// the stream close timeout fires on a half-closed stream; the proxy closed
// a failed connection with a FIN.)

// newTunnelWith is newTestTunnel with a shorter stream close timeout.
func newTunnelWith(t *testing.T, closeTimeout time.Duration, handle func(key.PublicKey, net.Conn)) *Tunnel {
	t.Helper()
	return newTunnelConfig(t, Config{HandleStream: handle, streamCloseTimeout: closeTimeout})
}

func openStream(t *testing.T, from, to *Tunnel) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := from.OpenStream(ctx, to.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHalfClosedStreamWaitsForAnswer: a client that half-closes its
// stream (a request, then FIN) and whose answer comes after the stream
// close timeout gets the whole answer. Upstream yamux started the close
// timeout at the half-close and, when it fired, the client read io.EOF
// with nothing of the answer (at load, 3.8 of 4 MB echoed in
// TestStreamBothDirections: the echo took longer than 30 s).
func TestHalfClosedStreamWaitsForAnswer(t *testing.T) {
	base := testutil.Snapshot()
	const closeTimeout = 200 * time.Millisecond
	answer := make([]byte, 256<<10)
	rand.Read(answer)
	slow := func(_ key.PublicKey, s net.Conn) {
		defer s.Close()
		if _, err := io.Copy(io.Discard, s); err != nil { // the request, to its FIN
			return
		}
		time.Sleep(4 * closeTimeout)
		s.Write(answer)
		CloseWrite(s)
		io.Copy(io.Discard, s)
	}
	a := newTunnelWith(t, closeTimeout, echo)
	b := newTunnelWith(t, closeTimeout, slow)
	link(t, a, b)

	s := openStream(t, a, b)
	if _, err := s.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := CloseWrite(s); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, answer) {
		t.Fatalf("answer after the close timeout: %d of %d bytes, err %v", len(got), len(answer), err)
	}
	s.Close()

	// Close (not CloseWrite) still frees a stream whose peer never
	// closes its half, after the close timeout: the leak guard stays.
	hold := make(chan struct{})
	b2 := newTunnelWith(t, closeTimeout, func(_ key.PublicKey, s net.Conn) {
		<-hold
		s.Close()
	})
	link(t, a, b2)
	s = openStream(t, a, b2)
	s.Write([]byte("x"))
	s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats()[b2.PublicKey()].Streams != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a stream closed by this side and never by its peer is still held after %v", 10*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(hold)

	a.Close()
	b.Close()
	b2.Close()
	waitGoroutines(t, base)
}

// TestSessionLossIsAnError: a stream whose session ends under it (closed
// here, closed by the peer) reads an error after the data that came, not
// io.EOF.
func TestSessionLossIsAnError(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(a, b *Tunnel)
	}{
		{"closed here", func(a, b *Tunnel) { a.ResetSession(b.PublicKey()) }},
		{"closed by the peer", func(a, b *Tunnel) { b.ResetSession(a.PublicKey()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := testutil.Snapshot()
			part := make([]byte, 64<<10)
			rand.Read(part)
			hold := make(chan struct{})
			// The peer sends part of its data, then nothing until the cut.
			sender := func(_ key.PublicKey, s net.Conn) {
				defer s.Close()
				s.Write(part)
				<-hold
			}
			a := newTestTunnel(t, echo)
			b := newTestTunnel(t, sender)
			link(t, a, b)
			s := openStream(t, a, b)
			s.Write([]byte("go"))
			s.SetReadDeadline(time.Now().Add(20 * time.Second))
			got := make([]byte, len(part))
			if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, part) {
				t.Fatalf("before the cut: %v", err)
			}
			tc.cut(a, b)
			n, err := io.Copy(io.Discard, s)
			var ne net.Error
			if err == nil || errors.Is(err, io.EOF) || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("after the session ended: read %d more bytes, then err %v; want an error other than EOF", n, err)
			}
			t.Logf("read ends with: %v", err)
			close(hold)
			s.Close()
			a.Close()
			b.Close()
			waitGoroutines(t, base)
		})
	}
}

// TestProxyFailureResets: an exporter-like proxy whose backend resets the
// connection mid-answer resets the stream, and the importer-like proxy
// then resets its client: the client reads an error after the data that
// came, never the clean end of a complete answer. (The proxy closed both
// ends of a failed proxy with a FIN.)
func TestProxyFailureResets(t *testing.T) {
	base := testutil.Snapshot()
	part := make([]byte, 64<<10)
	rand.Read(part)

	// backend: answers part, then resets once the client has it.
	backendLn := listenTCP(t)
	clientHasPart := make(chan struct{})
	go func() {
		c, err := backendLn.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 2)
		io.ReadFull(c, buf)
		c.Write(part)
		<-clientHasPart
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	exporter := func(_ key.PublicKey, s net.Conn) {
		be, err := net.Dial("tcp", backendLn.Addr().String())
		if err != nil {
			s.Close()
			return
		}
		Proxy(context.Background(), s, be)
	}
	a := newTestTunnel(t, echo)
	b := newTestTunnel(t, exporter)
	link(t, a, b)

	// importer: front listener → stream to b.
	frontLn := listenTCP(t)
	proxied := make(chan struct{})
	go func() {
		defer close(proxied)
		c, err := frontLn.Accept()
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := a.OpenStream(ctx, b.PublicKey())
		cancel()
		if err != nil {
			c.Close()
			return
		}
		Proxy(context.Background(), c, s)
	}()
	c, err := net.Dial("tcp", frontLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("go"))
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(part))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, part) {
		t.Fatalf("before the backend's reset: %v", err)
	}
	close(clientHasPart)
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("client after the backend's reset: %d more bytes, err %v; want a connection reset", n, err)
	}
	t.Logf("client read ends with: %v", err)
	<-proxied
	backendLn.Close()
	frontLn.Close()
	a.Close()
	b.Close()
	waitGoroutines(t, base)
}
