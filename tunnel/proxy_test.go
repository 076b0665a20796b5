package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/meshd/meshd/internal/testutil"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln := listenTCP(t)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// streamPair returns both ends of a yamux stream over loopback TCP, and
// a func that closes both sessions.
func streamPair(t *testing.T) (local, remote *yamux.Stream, closeSessions func()) {
	t.Helper()
	a, b := tcpPair(t)
	ca, err := yamux.Client(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := yamux.Server(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeSessions = func() { ca.Close(); sb.Close() }
	t.Cleanup(closeSessions)
	local, err = ca.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.Write([]byte{0}); err != nil { // yamux announces a stream with its first frame
		t.Fatal(err)
	}
	if remote, err = sb.AcceptStream(); err != nil {
		t.Fatal(err)
	}
	var z [1]byte
	if _, err := io.ReadFull(remote, z[:]); err != nil {
		t.Fatal(err)
	}
	return local, remote, closeSessions
}

// TestProxyHandOffAndAbort: a proxy between a TCP connection and a yamux
// stream moves messages in both directions across hand-offs of its waits
// (first message, after more than handOffEvery of quiet, and a burst in
// between), keeps the counts, and an abort while both directions wait in
// handed-off goroutines ends it promptly with no goroutine left.
func TestProxyHandOffAndAbort(t *testing.T) {
	base := testutil.Snapshot()
	client, server := tcpPair(t)
	local, remote, closeSessions := streamPair(t)

	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		aToB, bToA int64
		err        error
	}
	ended := make(chan result, 1)
	var clock atomic.Int64 // nanoseconds; stepped past handOffEvery instead of sleeping
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	startProxy(ctx, server, local, func(aToB, bToA int64, err error) { ended <- result{aToB, bToA, err} }, now)

	var sent int64
	exchange := func(i int) {
		t.Helper()
		msg := []byte(fmt.Sprintf("message %03d", i))
		for _, dir := range []struct {
			w io.Writer
			r io.Reader
		}{{client, remote}, {remote, client}} {
			if _, err := dir.w.Write(msg); err != nil {
				t.Fatalf("message %d: write: %v", i, err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(dir.r, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("message %d: read %q, %v", i, got, err)
			}
		}
		sent += int64(len(msg))
	}
	client.SetReadDeadline(time.Now().Add(20 * time.Second))
	remote.SetReadDeadline(time.Now().Add(20 * time.Second))
	exchange(0) // hands both waits off
	for i := 1; i <= 50; i++ {
		exchange(i) // within handOffEvery: the same goroutines wait
	}
	clock.Add(int64(handOffEvery + time.Millisecond))
	exchange(51) // hands off again

	time.Sleep(50 * time.Millisecond) // both directions waiting, in handed-off goroutines
	start := time.Now()
	cancel()
	select {
	case r := <-ended:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("proxy ended with %v; want context.Canceled", r.err)
		}
		if r.aToB != sent || r.bToA != sent {
			t.Errorf("counted %d and %d bytes; want %d each way", r.aToB, r.bToA, sent)
		}
		t.Logf("abort took %v", time.Since(start).Round(time.Microsecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy did not end within 5s of its context")
	}
	if _, err := io.ReadAll(client); err != nil && !isClosedErr(err) {
		t.Errorf("client after abort: %v; want EOF or a reset", err)
	}
	client.Close()
	closeSessions()
	waitGoroutines(t, base)
}

func isClosedErr(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && !ne.Timeout()) ||
		bytes.Contains([]byte(err.Error()), []byte("reset"))
}
