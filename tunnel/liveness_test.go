package tunnel

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/tunnel/internal/framing"
)

// TestLivenessSteps: the session watchdog's verdict over a sequence of
// pings, pongs and looks at the bytes received.
func TestLivenessSteps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const timeout = 15 * time.Second
	type step struct {
		at   int    // ms
		do   string // "ping", "pong", "look"
		rx   uint64 // for look
		gone bool   // the verdict at this instant, after the step
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"silent peer: gone a timeout after the ping", []step{
			{0, "ping", 0, false}, {14999, "look", 0, false}, {15000, "look", 0, true}}},
		{"answered: never gone", []step{
			{0, "ping", 0, false}, {100, "pong", 0, false}, {60000, "look", 0, false}}},
		{"not asked: never gone, however long the silence", []step{
			{0, "look", 0, false}, {100000, "look", 0, false}}},
		{"an old silence counts from the ping", []step{
			{0, "pong", 0, false}, {30000, "ping", 0, false}, {44999, "look", 0, false}, {45000, "look", 0, true}}},
		{"frames arrive, pong lags: alive, then gone a timeout after the last frame", []step{
			{0, "ping", 0, false}, {10000, "look", 5000, false}, {15000, "look", 5000, false},
			{15001, "ping", 5000, false}, // the pong of the first is given up: asked again
			{20000, "look", 9000, false}, {34999, "look", 9000, false}, {35000, "look", 9000, true}}},
		{"a chain of unanswered pings counts from the first", []step{
			{0, "ping", 0, false}, {15000, "look", 0, true}, {15001, "ping", 0, true}}},
		{"a pong ends the chain", []step{
			{0, "ping", 0, false}, {14000, "pong", 0, false}, {20000, "ping", 0, false},
			{34999, "look", 0, false}, {35000, "look", 0, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l liveness
			for i, s := range tc.steps {
				now := at(s.at)
				switch s.do {
				case "ping":
					l.pinged(now)
				case "pong":
					l.ponged(now)
				case "look":
					l.look(now, s.rx)
				}
				if got := l.gone(now, timeout); got != s.gone {
					t.Fatalf("step %d (%s at %d ms): gone = %v, want %v (%+v)", i, s.do, s.at, got, s.gone, l)
				}
			}
		})
	}
}

// pongDropper is the answering side's session connection that drops its
// pongs (yamux ping frames with ACK) while drop is set: a peer whose
// pongs wait behind its bulk data, as on a slow path, stretched.
type pongDropper struct {
	net.Conn
	drop     atomic.Bool
	bodyLeft uint32 // bytes of a data frame's body still to come (yamux's send loop writes it separately)
}

func (d *pongDropper) Write(p []byte) (int, error) {
	if d.bodyLeft > 0 {
		d.bodyLeft -= min(d.bodyLeft, uint32(len(p)))
		return d.Conn.Write(p)
	}
	if len(p) == 12 {
		typ, flags, length := p[1], binary.BigEndian.Uint16(p[2:4]), binary.BigEndian.Uint32(p[8:12])
		const typeData, typePing, flagACK = 0, 2, 2
		switch {
		case typ == typePing && flags&flagACK != 0 && d.drop.Load():
			return len(p), nil
		case typ == typeData:
			d.bodyLeft = length
		}
	}
	return d.Conn.Write(p)
}

// TestSessionAliveWhilePeerSends: a session whose pongs lag beyond the
// session timeout while the peer's frames keep arriving is alive and stays
// up; once the peer falls silent too it is closed, a timeout later. (The
// ping loop closed a session at the first pong later than the session
// timeout: under load, or on a slow path, a pong queues behind up to the
// TCP send buffer of bulk data, and a session carrying a transfer killed
// it.)
func TestSessionAliveWhilePeerSends(t *testing.T) {
	base := testutil.Snapshot()
	const timeout = 300 * time.Millisecond
	k, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	tn, err := New(Config{PrivateKey: k, Listen: netip.MustParseAddrPort("127.0.0.1:0"), SessionTimeout: timeout, PingInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	other, _ := key.NewPrivate()
	p := newPeer(tn, other.Public())

	ca, cb := net.Pipe()
	fc := framing.NewConn(ca)
	client, err := yamux.Client(fc, tn.ymxCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dropper := &pongDropper{Conn: cb}
	dropper.drop.Store(true)
	server, err := yamux.Server(dropper, tn.ymxCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	// The peer sends a little every 50 ms while sending is set.
	var sending atomic.Bool
	sending.Store(true)
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		s, err := server.AcceptStream()
		if err != nil {
			return
		}
		defer s.Close()
		for sending.Load() {
			if _, err := s.Write(make([]byte, 100)); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("x")) // the stream's SYN
	go func() {
		buf := make([]byte, 1024)
		for {
			if _, err := st.Read(buf); err != nil {
				return
			}
		}
	}()

	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		p.pingLoop(client, receivedOf(fc))
	}()

	time.Sleep(6 * timeout)
	if client.IsClosed() {
		t.Fatalf("the session was closed while its peer's frames kept arriving (pongs lagging %v+)", 6*timeout)
	}
	if p.pingSent.Load() == 0 {
		t.Fatalf("no ping outstanding: the test's pong dropper does not drop")
	}
	// The peer falls silent: the session is closed a timeout later.
	sending.Store(false)
	<-senderDone
	stopped := time.Now()
	select {
	case <-loopDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("a silent peer's session still up %v after it fell silent", 10*time.Second)
	}
	if !client.IsClosed() {
		t.Fatalf("the ping loop ended without closing the session")
	}
	t.Logf("closed %v after the peer fell silent (session timeout %v)", time.Since(stopped).Round(time.Millisecond), timeout)
	client.Close()
	server.Close()
	tn.Close()
	waitGoroutines(t, base)
}
