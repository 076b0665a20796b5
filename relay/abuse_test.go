package relay

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestBadConnectionsIsolated: each kind of misbehaving connection is
// closed, and only it: two good clients keep exchanging packets.
func TestBadConnectionsIsolated(t *testing.T) {
	srv, addr, logs := startServer(t, ServerConfig{HandshakeTimeout: 300 * time.Millisecond})
	ka, kb := testKey(1), testKey(2)
	var sa, sb pktSink
	a := dial(t, addr, ka, &sa)
	b := dial(t, addr, kb, &sb)

	header := func(r *rawConn, typ frameType, n int) {
		writeFrameHeader(r.bw, typ, n)
	}
	flush := func(t *testing.T, r *rawConn) {
		if err := r.bw.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name  string
		auth  bool // authenticate first
		act   func(t *testing.T, r *rawConn)
		close bool // half-close after act
	}{
		{"http request", false, func(t *testing.T, r *rawConn) {
			r.bw.WriteString("GET / HTTP/1.1\r\nHost: relay\r\n\r\n")
		}, false},
		{"random bytes", false, func(t *testing.T, r *rawConn) {
			junk := make([]byte, 4096)
			for i := range junk {
				junk[i] = byte(rnd.Uint32())
			}
			r.bw.Write(junk)
		}, false},
		{"oversized handshake frame", false, func(t *testing.T, r *rawConn) {
			header(r, frameClientAuth, maxHandshakeFrame+1)
		}, false},
		{"send before auth", false, func(t *testing.T, r *rawConn) {
			writeKeyFrame(r.bw, frameSend, &ka, []byte("sneaky"))
		}, false},
		{"unsupported version", false, func(t *testing.T, r *rawConn) {
			au := clientAuth{version: 99, pub: testKey(5)}
			writeFrame(r.bw, frameClientAuth, au.marshal())
		}, false},
		{"short clientAuth", false, func(t *testing.T, r *rawConn) {
			writeFrame(r.bw, frameClientAuth, []byte{ProtocolVersion, 1, 2, 3})
		}, false},
		{"truncated handshake", false, func(t *testing.T, r *rawConn) {
			header(r, frameClientAuth, authLen)
			r.bw.Write(make([]byte, 10))
		}, true},
		{"silent connection", false, func(t *testing.T, r *rawConn) {}, false},
		{"oversized frame after auth", true, func(t *testing.T, r *rawConn) {
			header(r, frameSend, MaxFrame+1)
		}, false},
		{"send frame shorter than a key", true, func(t *testing.T, r *rawConn) {
			writeFrame(r.bw, frameSend, []byte{1, 2, 3, 4, 5})
		}, false},
		{"truncated packet after auth", true, func(t *testing.T, r *rawConn) {
			header(r, frameSend, 100)
			r.bw.Write(ka[:])
			r.bw.Write(make([]byte, 10))
		}, true},
		{"short ping after auth", true, func(t *testing.T, r *rawConn) {
			writeFrame(r.bw, framePing, []byte{1, 2, 3})
		}, false},
	}
	for i, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			r := rawDial(t, addr)
			if tc.auth {
				r.auth(t, testKey(byte(10+i)))
			}
			tc.act(t, r)
			flush(t, r)
			if tc.close {
				r.Conn.(*net.TCPConn).CloseWrite()
			}
			took := expectClosed(t, r, 5*time.Second)
			if tc.name == "silent connection" && took < 200*time.Millisecond {
				t.Errorf("silent connection closed after %v, before the handshake timeout", took)
			}
			pingPong(t, a, b, ka, kb, &sa, &sb)
			waitFor(t, 2*time.Second, "only the good clients left", func() bool { return srv.Stats().Clients == 2 })
		})
	}
	if a.Err() != nil || b.Err() != nil {
		t.Fatalf("good clients ended: %v, %v", a.Err(), b.Err())
	}
	if w := logs.lines("level=WARN"); len(w) != 0 {
		t.Errorf("protocol errors should not log warnings (no wrong key involved): %q", w)
	}
	if l := logs.lines("frame too large"); len(l) < 2 {
		t.Errorf("oversized frames not logged: %q", l)
	}
	t.Logf("stats: %+v", srv.Stats())
}

// TestUnknownFramesSkipped: after the handshake the server skips frame
// types it does not know and answers pings.
func TestUnknownFramesSkipped(t *testing.T) {
	_, addr, _ := startServer(t, ServerConfig{})
	var sa pktSink
	ka, kr := testKey(1), testKey(2)
	dial(t, addr, ka, &sa)
	r := rawDial(t, addr)
	r.auth(t, kr)
	writeFrame(r.bw, 0x7f, []byte("a frame from the future"))
	writeU64Frame(r.bw, framePong, 1)
	writeU64Frame(r.bw, framePing, 42)
	writeKeyFrame(r.bw, frameSend, &ka, []byte("hi"))
	if err := r.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "packet after unknown frame", func() bool { return sa.n.Load() == 1 })
	if got := sa.all()[0]; got.from != kr || string(got.pkt) != "hi" {
		t.Errorf("got %q from %s", got.pkt, got.from.ShortString())
	}
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, MaxFrame)
	typ, p, err := readFrame(r.br, buf)
	if err != nil || typ != framePong {
		t.Fatalf("want pong, got %v %v", typ, err)
	}
	if v, _ := parseU64(p); v != 42 {
		t.Errorf("pong data %d, want 42", v)
	}
}

// TestStuckClient: a destination that never reads cannot grow the relay's
// memory or slow its senders; packets for it are dropped and WriteTimeout
// finally closes it.
func TestStuckClient(t *testing.T) {
	srv, addr, logs := startServer(t, ServerConfig{WriteTimeout: 500 * time.Millisecond})
	ka, kb, ks := testKey(1), testKey(2), testKey(3)
	var sa, sb pktSink
	a := dial(t, addr, ka, &sa)
	b := dial(t, addr, kb, &sb)
	stuck := rawDial(t, addr)
	stuck.Conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	stuck.auth(t, ks)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const total = 100_000
	pkt := bytes.Repeat([]byte{0xAB}, 1400)
	start := time.Now()
	for i := range total {
		sendRetry(t, a, ks, pkt)
		if i%25_000 == 0 {
			pingPong(t, a, b, ka, kb, &sa, &sb) // the sender is unaffected
		}
	}
	waitFor(t, 10*time.Second, "server to read every packet", func() bool { return srv.Stats().Received >= total })
	t.Logf("sent %d×1400 B in %v", total, time.Since(start))
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := srv.Stats()
	t.Logf("stats %+v; heap %d → %d KiB", st, before.HeapAlloc>>10, after.HeapAlloc>>10)
	if st.Dropped == 0 {
		t.Error("nothing dropped for a client that never reads")
	}
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 32<<20 {
		t.Errorf("heap grew by %d MiB for a stuck client", grow>>20)
	}
	waitFor(t, 5*time.Second, "the stuck client to be closed", func() bool { return srv.Stats().Clients == 2 })
	if w := logs.lines("level=WARN", "client not reading"); len(w) != 1 {
		t.Errorf("want one WARN for the stuck client, got %q", logs.lines("level=WARN"))
	}
	pingPong(t, a, b, ka, kb, &sa, &sb)
	if a.Err() != nil {
		t.Errorf("sender ended: %v", a.Err())
	}
}

// fakeServer accepts one connection, completes the handshake without
// checking the mac, and then neither reads nor writes.
func fakeServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		conns <- c
		r := &rawConn{Conn: c}
		r.br, r.bw = newRawBuffers(c)
		h := serverHello{version: ProtocolVersion}
		writeFrame(r.bw, frameServerHello, h.marshal())
		r.bw.Flush()
		buf := make([]byte, maxHandshakeFrame)
		if _, _, err := readFrame(r.br, buf); err != nil {
			return
		}
		writeFrame(r.bw, frameServerOK, nil)
		r.bw.Flush()
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case c := <-conns:
			c.Close()
		default:
		}
	})
	return ln.Addr().String()
}

func TestKeepaliveTimeout(t *testing.T) {
	addr := fakeServer(t)
	const interval = 50 * time.Millisecond
	c := dial(t, addr, testKey(1), nil, func(c *ClientConfig) { c.PingInterval = interval })
	start := time.Now()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client still running with a silent server")
	}
	took := time.Since(start)
	if !errors.Is(c.Err(), ErrKeepaliveTimeout) {
		t.Errorf("Err() = %v, want ErrKeepaliveTimeout", c.Err())
	}
	if took < 2*interval {
		t.Errorf("closed after %v, before 3 intervals", took)
	}
	t.Logf("keepalive timeout after %v: %v", took, c.Err())
}

func TestClientQueueFull(t *testing.T) {
	addr := fakeServer(t) // never reads
	c := dial(t, addr, testKey(1), nil, func(c *ClientConfig) { c.QueueLen = 4 })
	pkt := make([]byte, MaxPacket)
	var full bool
	for range 100_000 {
		if err := c.Send(testKey(2), pkt); errors.Is(err, ErrQueueFull) {
			full = true
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full || c.Stats().Dropped == 0 {
		t.Fatalf("Send never reported ErrQueueFull; stats %+v", c.Stats())
	}
}

func TestDialCanceledByContext(t *testing.T) {
	addr := fakeServerSilent(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Dial(ctx, addr, ClientConfig{ClusterKey: testClusterKey, PublicKey: testKey(1)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want context.Canceled", err)
	}
}

// fakeServerSilent accepts connections and says nothing.
func fakeServerSilent(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}
