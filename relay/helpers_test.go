package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/testutil"
)

var testClusterKey = bytes.Repeat([]byte{0x42}, 32)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := relayGoroutines("meshd/relay.(*", 2*time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked relay goroutines after all tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// relayGoroutines waits up to d for every goroutine whose stack contains
// pattern (such as this package's methods) to end and returns the stacks of
// those left.
func relayGoroutines(pattern string, d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, pattern) && !strings.Contains(g, "relayGoroutines") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkNoLeaks fails t if goroutines of the given type, or of any type in
// this package, are still running.
func checkNoLeaks(t *testing.T, typ ...string) {
	t.Helper()
	pattern := "meshd/relay.(*"
	if len(typ) > 0 {
		pattern += typ[0] + ")"
	}
	if left := relayGoroutines(pattern, 2*time.Second); left != "" {
		t.Fatalf("leaked goroutines:\n%s", left)
	}
}

// testKey returns a distinct non-zero public key for i.
func testKey(i byte) key.PublicKey {
	var k key.PublicKey
	for j := range k {
		k[j] = i ^ byte(j)
	}
	k[0] = i
	k[31] = 0xEE
	return k
}

// logBuf collects log output safely from many goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines containing every one of subs.
func (l *logBuf) lines(subs ...string) []string {
	var out []string
next:
	for _, line := range strings.Split(l.String(), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startServer starts a server on loopback; cleanup closes it and checks
// that Serve returned net.ErrClosed.
func startServer(t testing.TB, cfg ServerConfig) (*Server, string, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	if cfg.ClusterKey == nil {
		cfg.ClusterKey = testClusterKey
	}
	if cfg.Logger == nil {
		cfg.Logger = logs.logger()
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve returned %v, want net.ErrClosed", err)
		}
	})
	return s, ln.Addr().String(), logs
}

// pktSink collects packets delivered to a client.
type pktSink struct {
	n  atomic.Int64
	mu sync.Mutex
	ps []recvd
}

type recvd struct {
	from key.PublicKey
	pkt  []byte
}

func (s *pktSink) onPacket(from key.PublicKey, pkt []byte) {
	s.mu.Lock()
	s.ps = append(s.ps, recvd{from, bytes.Clone(pkt)})
	s.mu.Unlock()
	s.n.Add(1)
}

func (s *pktSink) all() []recvd {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recvd(nil), s.ps...)
}

// dial connects a client with key k; cleanup closes it.
func dial(t testing.TB, addr string, k key.PublicKey, sink *pktSink, mod ...func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{ClusterKey: testClusterKey, PublicKey: k}
	if sink != nil {
		cfg.OnPacket = sink.onPacket
	}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendRetry sends, retrying while the client's queue is full.
func sendRetry(t testing.TB, c *Client, to key.PublicKey, pkt []byte) {
	t.Helper()
	for {
		err := c.Send(to, pkt)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Send: %v", err)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Until(t, d, what, cond)
}

// rawConn is a hand-driven client connection.
type rawConn struct {
	net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func rawDial(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}
}

// auth reads serverHello, authenticates as k and reads serverOK.
func (r *rawConn) auth(t testing.TB, k key.PublicKey) {
	t.Helper()
	r.SetDeadline(time.Now().Add(5 * time.Second))
	defer r.SetDeadline(time.Time{})
	buf := make([]byte, maxHandshakeFrame)
	typ, p, err := readFrame(r.br, buf)
	if err != nil || typ != frameServerHello {
		t.Fatalf("serverHello: %v %v", typ, err)
	}
	h, err := parseServerHello(p)
	if err != nil {
		t.Fatal(err)
	}
	a := clientAuth{version: ProtocolVersion, pub: k, mac: authMAC(authKey(testClusterKey), &h.nonce, k)}
	writeFrame(r.bw, frameClientAuth, a.marshal())
	if err := r.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if typ, _, err = readFrame(r.br, buf); err != nil || typ != frameServerOK {
		t.Fatalf("serverOK: %v %v", typ, err)
	}
}

// expectClosed reads until the peer closes the connection, failing if it
// stays open for d.
func expectClosed(t testing.TB, c net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	if isTimeout(err) {
		t.Fatalf("connection still open after %v", d)
	}
	return time.Since(start)
}

// pingPong checks that a and b (keys ka, kb) still exchange a packet.
func pingPong(t testing.TB, a, b *Client, ka, kb key.PublicKey, sa, sb *pktSink) {
	t.Helper()
	na, nb := sa.n.Load(), sb.n.Load()
	sendRetry(t, a, kb, []byte("ping"))
	waitFor(t, 5*time.Second, "a→b packet", func() bool { return sb.n.Load() > nb })
	sendRetry(t, b, ka, []byte("pong"))
	waitFor(t, 5*time.Second, "b→a packet", func() bool { return sa.n.Load() > na })
}

func newRawBuffers(c net.Conn) (*bufio.Reader, *bufio.Writer) {
	return bufio.NewReader(c), bufio.NewWriter(c)
}
