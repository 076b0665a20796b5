package relay

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// dialFrom opens a TCP connection to addr from the loopback address src
// (Linux answers on all of 127.0.0.0/8), so a test can play many sources.
func dialFrom(t testing.TB, src, addr string) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", addr)
}

// TestHandshakeFloodKeepsRealClients is issue #11's attack: thousands of
// unauthenticated connections held open. Handshakes are counted apart from
// clients and per source, so a real node still connects and stays; the
// log stays short.
func TestHandshakeFloodKeepsRealClients(t *testing.T) {
	srv, addr, logs := startServer(t, ServerConfig{MaxClients: 4, MaxHandshakes: 64, HandshakeTimeout: 3 * time.Second})
	ka, kb := testKey(1), testKey(2)
	var sa, sb pktSink
	a := dial(t, addr, ka, &sa)

	// 8 sources × 40 idle connections, and 300 that fail the handshake at
	// once (garbage).
	var idle []net.Conn
	closedAtOnce := 0
	for i := range 8 {
		src := fmt.Sprintf("127.0.0.%d", i+2)
		for range 40 {
			c, err := dialFrom(t, src, addr)
			if err != nil {
				t.Fatal(err)
			}
			idle = append(idle, c)
		}
	}
	for range 300 {
		c, err := dialFrom(t, "127.0.0.20", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		c.Close()
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	// Beyond 16 per source the connections were closed at accept.
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Read(make([]byte, 64)); err != nil && !isTimeout(err) {
			closedAtOnce++
		}
	}
	if st := srv.Stats(); st.Handshakes > 64 {
		t.Fatalf("%d handshakes open, cap 64", st.Handshakes)
	}
	if closedAtOnce < 8*(40-16) {
		t.Errorf("%d of 320 idle connections closed at once, want ≥ %d (16 per source)", closedAtOnce, 8*(40-16))
	}

	// A real node connects during the flood and stays connected.
	b := dial(t, addr, kb, &sb)
	pingPong(t, a, b, ka, kb, &sa, &sb)
	time.Sleep(1500 * time.Millisecond)
	pingPong(t, a, b, ka, kb, &sa, &sb)
	if a.Err() != nil || b.Err() != nil {
		t.Fatalf("real clients dropped during the flood: %v, %v", a.Err(), b.Err())
	}
	if n := srv.Stats().Clients; n != 2 {
		t.Fatalf("%d clients, want 2", n)
	}

	// Idle handshakes end at the deadline; the counts go back to zero.
	waitFor(t, 5*time.Second, "handshakes back to zero", func() bool { return srv.Stats().Handshakes == 0 })
	lines := len(logs.lines("relay: ")) - len(logs.lines("client connected"))
	t.Logf("%d log lines for %d unauthenticated connections; stats %+v", lines, len(idle)+300, srv.Stats())
	if lines >= 20 {
		t.Errorf("%d log lines for %d unauthenticated connections, want < 20", lines, len(idle)+300)
	}
}

// TestHandshakeEviction: when MaxHandshakes are open, a new connection
// closes the oldest handshake instead of being refused.
func TestHandshakeEviction(t *testing.T) {
	srv, addr, _ := startServer(t, ServerConfig{MaxHandshakes: 4, HandshakeTimeout: 10 * time.Second})
	var cs []net.Conn
	for i := range 4 {
		c, err := dialFrom(t, fmt.Sprintf("127.0.0.%d", 30+i), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
		waitFor(t, 2*time.Second, "handshake counted", func() bool { return srv.Stats().Handshakes == i+1 })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, ClientConfig{ClusterKey: testClusterKey, PublicKey: testKey(9)})
	if err != nil {
		t.Fatalf("real client refused while 4 idle handshakes held the cap: %v", err)
	}
	defer c.Close()
	expectClosed(t, cs[0], 2*time.Second)
	if st := srv.Stats(); st.Evicted != 1 || st.Handshakes != 3 || st.Clients != 1 {
		t.Fatalf("stats %+v, want 1 evicted, 3 handshakes, 1 client", st)
	}
}
