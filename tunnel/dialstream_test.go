package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// TestDialStreamStalledSession: a peer that stops answering while bulk
// streams fill the session's send buffer stalls yamux's send loop, and
// with it yamux's OpenStream and Write (they take no context and wait up
// to the session timeout). DialStream must still give up when its context
// does, so that an import tries the next endpoint in time.
func TestDialStreamStalledSession(t *testing.T) {
	a := newTestTunnel(t, echo)
	b := newTestTunnel(t, func(_ key.PublicKey, s net.Conn) { io.Copy(io.Discard, s); s.Close() })
	link(t, a, b)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer func() {
		close(stop)
		a.Close() // ends the session and with it the writes it holds
		b.Close()
		wg.Wait()
	}()
	var moved sync.WaitGroup
	const bulk = 6 // × the 4 MiB stream window: more than the 8 MiB send buffer can hold
	for i := 0; i < bulk; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := a.OpenStream(ctx, b.PublicKey())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		moved.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			buf := make([]byte, 64<<10)
			for n := 0; n < 1000; n++ { // bounded: 64 MiB at most
				select {
				case <-stop:
					return
				default:
				}
				s.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if _, err := s.Write(buf); err != nil {
					return
				}
				if n == 4 {
					moved.Done()
				}
			}
		}()
	}
	moved.Wait()
	b.SetBlackhole([]key.PublicKey{a.PublicKey()})
	time.Sleep(time.Second) // the send buffer fills; the send loop blocks in its write

	for _, handshake := range []func(net.Conn) error{nil, func(c net.Conn) error {
		_, err := c.Write([]byte("hello"))
		return err
	}} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		c, err := a.DialStream(ctx, b.PublicKey(), handshake)
		took := time.Since(start)
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("handshake %v: a stream opened on a session whose peer is blackholed", handshake != nil)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("handshake %v: err = %v, want one wrapping context.DeadlineExceeded", handshake != nil, err)
		}
		if took > 1500*time.Millisecond {
			t.Errorf("handshake %v: DialStream took %v with a 300ms context", handshake != nil, took)
		}
		t.Logf("handshake %v: gave up after %v: %v", handshake != nil, took.Round(time.Millisecond), err)
	}
}
