package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// testPacket returns packet i of size n with recognisable content.
func testPacket(i, n int) []byte {
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(i*7 + j)
	}
	if n >= 4 {
		binary.BigEndian.PutUint32(p, uint32(i))
	}
	return p
}

func TestExchangeBothWays(t *testing.T) {
	srv, addr, _ := startServer(t, ServerConfig{})
	ka, kb := testKey(1), testKey(2)
	var sa, sb pktSink
	a := dial(t, addr, ka, &sa)
	b := dial(t, addr, kb, &sb)

	const count = 2000
	size := func(i int) int {
		switch i {
		case 0:
			return 0
		case 1:
			return MaxPacket
		}
		return 4 + i%1500
	}
	// Send both ways at once, keeping at most 256 packets in flight so that
	// no queue overflows.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range count {
			for int64(i)-sa.n.Load() > 256 {
				time.Sleep(100 * time.Microsecond)
			}
			sendRetry(t, b, ka, testPacket(i, size(i)))
		}
	}()
	for i := range count {
		for int64(i)-sb.n.Load() > 256 {
			time.Sleep(100 * time.Microsecond)
		}
		sendRetry(t, a, kb, testPacket(i, size(i)))
	}
	<-done
	waitFor(t, 10*time.Second, "all packets", func() bool {
		return sa.n.Load() == count && sb.n.Load() == count
	})
	for _, side := range []struct {
		name string
		sink *pktSink
		from key.PublicKey
	}{{"a→b", &sb, ka}, {"b→a", &sa, kb}} {
		for i, r := range side.sink.all() {
			if r.from != side.from {
				t.Fatalf("%s: packet %d from %s, want %s", side.name, i, r.from.ShortString(), side.from.ShortString())
			}
			if want := testPacket(i, size(i)); !bytes.Equal(r.pkt, want) {
				t.Fatalf("%s: packet %d corrupted or reordered (len %d, want %d)", side.name, i, len(r.pkt), len(want))
			}
		}
	}
	st := srv.Stats()
	if st.Clients != 2 || st.Forwarded != 2*count || st.Dropped != 0 || st.NoRoute != 0 {
		t.Errorf("stats = %+v", st)
	}
	if cs := a.Stats(); cs.Sent != count || cs.Received != count {
		t.Errorf("client a stats = %+v", cs)
	}
}

func TestNoRoute(t *testing.T) {
	srv, addr, _ := startServer(t, ServerConfig{})
	ka, kb := testKey(1), testKey(2)
	var sa, sb pktSink
	a := dial(t, addr, ka, &sa)
	b := dial(t, addr, kb, &sb)
	for range 10 {
		sendRetry(t, a, testKey(99), []byte("nobody home"))
	}
	waitFor(t, 5*time.Second, "NoRoute == 10", func() bool { return srv.Stats().NoRoute == 10 })
	pingPong(t, a, b, ka, kb, &sa, &sb)
	if st := srv.Stats(); st.Forwarded != 2 || st.Dropped != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestWrongClusterKey(t *testing.T) {
	srv, addr, logs := startServer(t, ServerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Dial(ctx, addr, ClientConfig{ClusterKey: bytes.Repeat([]byte{7}, 32), PublicKey: testKey(1)})
	if !errors.Is(err, ErrAuthFailed) || !strings.Contains(err.Error(), "wrong cluster key") {
		t.Fatalf("Dial with the wrong key: %v, want ErrAuthFailed", err)
	}
	t.Logf("client error: %v", err)
	waitFor(t, 2*time.Second, "auth failure logged", func() bool { return len(logs.lines("level=WARN")) > 0 })
	time.Sleep(50 * time.Millisecond)
	warns := logs.lines("level=WARN")
	if len(warns) != 1 || !strings.Contains(warns[0], "failed authentication (wrong cluster key?)") ||
		!strings.Contains(warns[0], "relay: client 127.0.0.1:") {
		t.Fatalf("want exactly one WARN naming the client, got %q", warns)
	}
	if st := srv.Stats(); st.AuthFailures != 1 || st.Clients != 0 || st.Accepted != 0 {
		t.Errorf("stats = %+v", st)
	}
	// The right key still works.
	dial(t, addr, testKey(1), nil)
}

func TestReplaceSameKey(t *testing.T) {
	srv, addr, logs := startServer(t, ServerConfig{})
	ka, kb := testKey(1), testKey(2)
	var sa, sb1, sb2 pktSink
	a := dial(t, addr, ka, &sa)
	b1 := dial(t, addr, kb, &sb1)
	b2 := dial(t, addr, kb, &sb2)
	select {
	case <-b1.Done():
		t.Logf("replaced client ended: %v", b1.Err())
	case <-time.After(5 * time.Second):
		t.Fatal("first client with the same key was not closed")
	}
	if b1.Err() == nil {
		t.Error("Err() nil after Done")
	}
	pingPong(t, a, b2, ka, kb, &sa, &sb2)
	if n := sb1.n.Load(); n != 0 {
		t.Errorf("replaced client received %d packets", n)
	}
	waitFor(t, 2*time.Second, "replacement logged", func() bool { return len(logs.lines("replaced")) == 1 })
	if st := srv.Stats(); st.Clients != 2 || st.Accepted != 3 {
		t.Errorf("stats = %+v", st)
	}
}

func TestRTT(t *testing.T) {
	_, addr, _ := startServer(t, ServerConfig{})
	c := dial(t, addr, testKey(1), nil, func(c *ClientConfig) { c.PingInterval = 20 * time.Millisecond })
	waitFor(t, 2*time.Second, "RTT > 0", func() bool { return c.RTT() > 0 })
	if rtt := c.RTT(); rtt > time.Second {
		t.Errorf("loopback RTT = %v", rtt)
	}
	if c.Addr() != addr {
		t.Errorf("Addr() = %q, want %q", c.Addr(), addr)
	}
}

func TestClientCloseAndSend(t *testing.T) {
	_, addr, _ := startServer(t, ServerConfig{})
	c := dial(t, addr, testKey(1), nil)
	if err := c.Send(testKey(2), make([]byte, MaxPacket+1)); !errors.Is(err, ErrPacketTooLarge) {
		t.Errorf("oversized Send: %v", err)
	}
	if c.Err() != nil {
		t.Errorf("Err() = %v while running", c.Err())
	}
	c.Close()
	c.Close()
	if err := c.Send(testKey(2), []byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: %v, want net.ErrClosed", err)
	}
	if !errors.Is(c.Err(), net.ErrClosed) {
		t.Errorf("Err() = %v after Close", c.Err())
	}
	checkNoLeaks(t, "Client")
}

func TestServerCloseEndsClients(t *testing.T) {
	logs := &logBuf{}
	srv, err := NewServer(ServerConfig{ClusterKey: testClusterKey, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var cs []*Client
	for i := range 5 {
		cs = append(cs, dial(t, ln.Addr().String(), testKey(byte(i+1)), nil))
	}
	raw := rawDial(t, ln.Addr().String()) // stuck in the handshake
	srv.Close()
	srv.Close()
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve = %v, want net.ErrClosed", err)
	}
	for i, c := range cs {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("client %d still running after server Close", i)
		}
	}
	expectClosed(t, raw, 5*time.Second)
	if err := srv.Serve(ln); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close = %v", err)
	}
	for _, c := range cs {
		c.Close()
	}
	checkNoLeaks(t)
	if w := logs.lines("level=WARN"); len(w) != 0 {
		t.Errorf("warnings on a clean shutdown: %q", w)
	}
}

func TestMaxClients(t *testing.T) {
	_, addr, _ := startServer(t, ServerConfig{MaxClients: 2})
	a := dial(t, addr, testKey(1), nil)
	dial(t, addr, testKey(2), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := Dial(ctx, addr, ClientConfig{ClusterKey: testClusterKey, PublicKey: testKey(3)}); err == nil {
		c.Close()
		t.Fatal("third client admitted with MaxClients 2")
	}
	a.Close()
	waitFor(t, 5*time.Second, "a slot to free up", func() bool {
		c, err := Dial(ctx, addr, ClientConfig{ClusterKey: testClusterKey, PublicKey: testKey(3)})
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func TestConfigValidation(t *testing.T) {
	if _, err := NewServer(ServerConfig{ClusterKey: []byte("short")}); err == nil {
		t.Error("NewServer accepted a 5-byte cluster key")
	}
	ctx := context.Background()
	if _, err := Dial(ctx, "127.0.0.1:1", ClientConfig{ClusterKey: testClusterKey}); err == nil {
		t.Error("Dial accepted a zero public key")
	}
	if _, err := Dial(ctx, "127.0.0.1:1", ClientConfig{PublicKey: testKey(1)}); err == nil {
		t.Error("Dial accepted no cluster key")
	}
}

func TestDialContextCanceled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts (backlog) but never speaks
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, ln.Addr().String(), ClientConfig{ClusterKey: testClusterKey, PublicKey: testKey(1)})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("Dial to a silent server: %v after %v", err, time.Since(start))
	}
}

// TestNamerInLogs: the server's lines about an authenticated client name it
// by cfg.Namer (node names, as the node's other lines do), else by its
// key's short form.
func TestNamerInLogs(t *testing.T) {
	ka, kb := testKey(1), testKey(2)
	_, addr, logs := startServer(t, ServerConfig{Namer: func(k key.PublicKey) string {
		if k == ka {
			return "node-a"
		}
		return ""
	}})
	var sa, sb pktSink
	a := dial(t, addr, ka, &sa)
	dial(t, addr, kb, &sb)
	waitFor(t, 5*time.Second, "both connections logged", func() bool {
		return len(logs.lines("relay: client connected", "peer=node-a")) == 1 &&
			len(logs.lines("relay: client connected", "peer="+kb.ShortString())) == 1
	})
	a.Close()
	waitFor(t, 5*time.Second, "the close logged by name", func() bool {
		return len(logs.lines("relay: client closed", "peer=node-a")) == 1
	})
}
