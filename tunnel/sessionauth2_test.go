package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/tunnel/internal/framing"
)

// TestHelloStampsSteps: the acceptor's freshness rule for MSA2 hellos, step
// by step with an injected clock: a stamp is taken only if greater than
// every one taken before and within helloWindow of the acceptor's clock;
// a peer made anew (a restart) takes none stamped before helloFloorSlack
// ahead of its making.
func TestHelloStampsSteps(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	ns := func(tm time.Time) int64 { return tm.UnixNano() }
	h := newHelloStamps(t0)
	for i, st := range []struct {
		now  time.Time
		ts   int64
		want bool
		why  string
	}{
		{t0, ns(t0.Add(-2 * time.Second)), false, "stamped before the peer was made (less the slack)"},
		{t0, ns(t0.Add(-helloFloorSlack)), false, "exactly the floor: not greater"},
		{t0, ns(t0.Add(-500 * time.Millisecond)), true, "within the slack of a clock a little behind"},
		{t0, ns(t0.Add(-500 * time.Millisecond)), false, "the same stamp again: a replay"},
		{t0, ns(t0.Add(-600 * time.Millisecond)), false, "older than one taken"},
		{t0.Add(time.Millisecond), ns(t0.Add(time.Millisecond)), true, "the next dial"},
		{t0.Add(10 * time.Minute), ns(t0.Add(10*time.Minute - helloWindow - time.Nanosecond)), false, "greater, but older than the window"},
		{t0.Add(10 * time.Minute), ns(t0.Add(10*time.Minute + helloWindow + time.Nanosecond)), false, "ahead of the window"},
		{t0.Add(10 * time.Minute), ns(t0.Add(10*time.Minute - helloWindow)), true, "the window's edge, behind"},
		{t0.Add(10 * time.Minute), ns(t0.Add(10*time.Minute + helloWindow)), true, "the window's edge, ahead"},
		{t0.Add(10 * time.Minute), ns(t0.Add(10 * time.Minute)), false, "in the window but not greater than the fast clock's"},
		{t0.Add(13 * time.Minute), ns(t0.Add(12*time.Minute + time.Nanosecond)), true, "past the fast clock's stamp"},
	} {
		if got := h.take(st.ts, st.now); got != st.want {
			t.Fatalf("step %d (%s): take = %v, want %v", i, st.why, got, st.want)
		}
	}
	// Restart at t1: the state is gone, the floor is t1 less the slack.
	t1 := t0.Add(13 * time.Minute)
	h = newHelloStamps(t1)
	for i, st := range []struct {
		ts   int64
		want bool
		why  string
	}{
		{ns(t0.Add(12*time.Minute + time.Nanosecond)), false, "taken before the restart: refused after it"},
		{ns(t1.Add(-helloFloorSlack - time.Millisecond)), false, "recorded before the restart, within the window"},
		{ns(t1.Add(-time.Millisecond)), true, "a dial just after the restart"},
		{ns(t1.Add(-time.Millisecond)), false, "replayed"},
	} {
		if got := h.take(st.ts, t1); got != st.want {
			t.Fatalf("after restart, step %d (%s): take = %v, want %v", i, st.why, got, st.want)
		}
	}
}

// TestNextStampGrows: a dialer's stamps to a peer grow strictly, also when
// its clock steps back.
func TestNextStampGrows(t *testing.T) {
	p := &peer{}
	t0 := time.Unix(1000, 0)
	var last int64
	for i, now := range []time.Time{t0, t0, t0.Add(-time.Minute), t0.Add(time.Nanosecond), t0.Add(time.Second)} {
		ts := p.nextStamp(now)
		if ts <= last || ts < now.UnixNano() && i != 2 && i != 3 {
			t.Fatalf("step %d: stamp %d after %d at clock %d", i, ts, last, now.UnixNano())
		}
		last = ts
	}
}

// pingStream's and roundTrip's first stream to a cold peer, as a function.
type firstStream func(tb testing.TB, from, to *Tunnel, d time.Duration) time.Duration

var firstStreams = []struct {
	name string
	open firstStream
}{
	{"with handshake", pingStream}, // DialStream: the stream goes before the proof
	{"bare", roundTrip},            // OpenStream: it waits for the proof
}

// authCounts is a tunnel's session handshakes by kind.
func authCounts(t *Tunnel) [6]int64 {
	c := &t.authCount
	return [6]int64{c.dial1.Load(), c.dial2.Load(), c.accept1.Load(), c.accept2.Load(), c.refused.Load(), c.fallbacks.Load()}
}

// TestSessionMSA2: a first stream to a cold peer goes on an MSA2 session
// (one round trip less than MSA1): the dialer sent MSA2, the acceptor took
// it, nothing fell back. Streams work both ways on it, and nothing leaks.
func TestSessionMSA2(t *testing.T) {
	for _, fs := range firstStreams {
		t.Run(fs.name, func(t *testing.T) {
			base := testutil.Snapshot()
			a, b := newProbingTunnel(t), newProbingTunnel(t)
			link(t, a, b)
			fs.open(t, a, b, 10*time.Second)
			roundTrip(t, b, a, 5*time.Second)
			if got, want := authCounts(a), [6]int64{0, 1, 0, 0, 0, 0}; got != want {
				t.Errorf("dialer's handshakes (dial1, dial2, accept1, accept2, refused, fallbacks) %v, want %v", got, want)
			}
			if got, want := authCounts(b), [6]int64{0, 0, 0, 1, 0, 0}; got != want {
				t.Errorf("acceptor's handshakes %v, want %v", got, want)
			}
			a.Close()
			b.Close()
			base.Check(t, 5*time.Second, 2)
		})
	}
}

// TestSessionMSA2Replay: an MSA2 hello is taken once; the same bytes again
// (a replay: what a local process in kernel mode could send, had it seen
// them) get an authenticated refusal and no session, and so does one with
// an older stamp. The real sessions keep working.
func TestSessionMSA2Replay(t *testing.T) {
	a, b := newProbingTunnel(t), newProbingTunnel(t)
	link(t, a, b)
	roundTrip(t, a, b, 10*time.Second)
	d, err := a.sessionSecret(b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	var nonce [sessionNonceLen]byte
	rand.Read(nonce[:])
	ts := time.Now().UnixNano()
	hello := hello2(d, a.PublicKey(), b.PublicKey(), &nonce, ts)
	send := func(hello []byte) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := a.net.DialTCP(ctx, netip.AddrPortFrom(b.MeshIP(), SessionPort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		ans := make([]byte, answer2Len)
		if _, err := io.ReadFull(c, ans); err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return ans
	}
	mac := func(role byte, ts int64) []byte {
		return append([]byte(session2Magic), session2MAC(d, role, a.PublicKey(), b.PublicKey(), &nonce, ts)...)
	}
	if ans := send(hello); !bytes.Equal(ans, mac('a', ts)) {
		t.Fatalf("a fresh hello got %x, want the acceptor's proof", ans)
	}
	if ans := send(hello); !bytes.Equal(ans, mac('r', ts)) {
		t.Fatalf("the replayed hello got %x, want the refusal", ans)
	}
	older := ts - int64(time.Millisecond)
	if ans := send(hello2(d, a.PublicKey(), b.PublicKey(), &nonce, older)); !bytes.Equal(ans, mac('r', older)) {
		t.Fatalf("an older hello got %x, want the refusal", ans)
	}
	waitUntil(t, 5*time.Second, "the acceptor counted its refusals", func() bool { return authCounts(b)[4] == 2 })
	if got := authCounts(b); got[3] != 2 {
		t.Errorf("acceptor took %d MSA2 hellos, want 2 (the real one and the first test one)", got[3])
	}
	roundTrip(t, a, b, 10*time.Second)
	roundTrip(t, b, a, 10*time.Second)
}

// TestSessionStaleClockFallback: a dialer whose clock is off by more than
// the window gets its MSA2 hello refused; it falls back to MSA1 at once,
// the first stream still succeeds (with a handshake it went out on the
// refused session and is opened again), and the next dial within msa1Hold
// uses MSA1 straight away.
func TestSessionStaleClockFallback(t *testing.T) {
	for _, fs := range firstStreams {
		t.Run(fs.name, func(t *testing.T) {
			base := testutil.Snapshot()
			a, b := newProbingTunnel(t), newProbingTunnel(t)
			a.helloSkew.Store(int64(-10 * time.Minute))
			link(t, a, b)
			took := fs.open(t, a, b, 10*time.Second)
			t.Logf("first stream after a refused hello: %v", took.Round(time.Microsecond))
			if got, want := authCounts(a), [6]int64{1, 1, 0, 0, 0, 1}; got != want {
				t.Errorf("dialer's handshakes (dial1, dial2, accept1, accept2, refused, fallbacks) %v, want %v", got, want)
			}
			if got, want := authCounts(b), [6]int64{0, 0, 1, 0, 1, 0}; got != want {
				t.Errorf("acceptor's handshakes %v, want %v", got, want)
			}
			makeCold(t, a, b)
			fs.open(t, a, b, 10*time.Second)
			if got, want := authCounts(a), [6]int64{2, 1, 0, 0, 0, 1}; got != want {
				t.Errorf("after the next dial: dialer's handshakes %v, want %v", got, want)
			}
			a.Close()
			b.Close()
			base.Check(t, 5*time.Second, 2)
		})
	}
}

// fakeAcceptor replaces b's session listener with serve, run for each
// connection, and returns how many connections it took.
func fakeAcceptor(t *testing.T, b *Tunnel, serve func(c net.Conn)) *atomic.Int64 {
	t.Helper()
	b.ln.Close()
	var ln net.Listener
	var err error
	for range 50 { // the old listener's port is free once its loop saw it close
		if ln, err = b.net.ListenTCP(netip.AddrPortFrom(b.MeshIP(), SessionPort)); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.Close()
		wg.Wait()
	})
	return &n
}

// TestSessionMSA1OnlyPeer: a peer of an earlier version, whose acceptor
// speaks only MSA1 (it sends its hello first and refuses "MSA2" as not a
// session hello), still gets its session: the dialer reads the MSA1 hello
// where the answer should be, redials with MSA1 at once, and the first
// stream succeeds.
func TestSessionMSA1OnlyPeer(t *testing.T) {
	for _, fs := range firstStreams {
		t.Run(fs.name, func(t *testing.T) {
			a, b := newProbingTunnel(t), newProbingTunnel(t)
			link(t, a, b)
			bp := b.peers[a.PublicKey()]
			var refused atomic.Int64
			conns := fakeAcceptor(t, b, func(c net.Conn) {
				// The acceptor of the build before MSA2 (authSession as
				// it was): hello first, then the dialer's, then the MACs.
				if err := b.authSession(context.Background(), c, a.PublicKey(), false); err != nil {
					refused.Add(1)
					c.Close()
					return
				}
				f := framing.NewConn(c)
				sess, err := yamux.Server(f, b.ymxCfg)
				if err != nil {
					c.Close()
					return
				}
				bp.serve(sess, receivedOf(f), false, nil)
			})
			took := fs.open(t, a, b, 10*time.Second)
			t.Logf("first stream to an MSA1-only peer: %v", took.Round(time.Microsecond))
			if conns.Load() != 2 || refused.Load() != 1 {
				t.Errorf("old acceptor took %d connections and refused %d, want 2 and 1 (MSA2, then MSA1)", conns.Load(), refused.Load())
			}
			if got := authCounts(a); got[0] != 1 || got[1] != 1 || got[5] != 1 {
				t.Errorf("dialer's handshakes (dial1, dial2, accept1, accept2, refused, fallbacks) %v, want one MSA2, one fallback, one MSA1", got)
			}
			roundTrip(t, b, a, 5*time.Second)
		})
	}
}

// TestSessionMSA2WrongAcceptor: an acceptor that cannot prove the peer's
// key (a process holding the session port with another key) answers the
// MSA2 hello with a bad MAC and follows it with yamux frames that open a
// stream to the dialer. The dialer uses none of it: no stream reaches its
// handler, the session closes, it falls back to MSA1 (which the impostor
// fails too), and the stream that went out fails.
func TestSessionMSA2WrongAcceptor(t *testing.T) {
	var streams atomic.Int64
	a := newTestTunnel(t, func(_ key.PublicKey, s net.Conn) { streams.Add(1); s.Close() })
	defer a.Close()
	b := newTestTunnel(t, echo)
	link(t, a, b)
	other, _ := key.NewPrivate()
	impostor := &Tunnel{cfg: Config{PrivateKey: other}}
	var sawMSA1 atomic.Int64
	fakeAcceptor(t, b, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		magic := make([]byte, 4)
		if _, err := io.ReadFull(c, magic); err != nil {
			return
		}
		if string(magic) == sessionAuthMagic {
			sawMSA1.Add(1)
			impostor.msa1(c, a.PublicKey(), false, true)
			return
		}
		io.ReadFull(c, make([]byte, hello2Len-4))
		bad := make([]byte, answer2Len)
		rand.Read(bad[4:])
		copy(bad, session2Magic)
		// yamux: open stream 2 (a server's) with data "evil".
		open := []byte{0, 1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0}
		data := []byte{0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4, 'e', 'v', 'i', 'l'}
		c.Write(append(append(bad, open...), data...))
		io.Copy(io.Discard, c)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := a.DialStream(ctx, b.PublicKey(), func(s net.Conn) error {
		s.Write([]byte("ping"))
		_, err := io.ReadFull(s, make([]byte, 4))
		return err
	})
	if err == nil {
		t.Fatal("a stream to an impostor acceptor succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("stream failed: %v", err)
	}
	if streams.Load() != 0 {
		t.Fatalf("the dialer served %d streams the impostor opened", streams.Load())
	}
	if got := authCounts(a); got[1] != 1 || got[5] != 1 || sawMSA1.Load() == 0 {
		t.Errorf("dialer's handshakes %v (impostor saw %d MSA1 hellos), want one MSA2, one fallback, then MSA1", got, sawMSA1.Load())
	}
}

// writeLog records each write on a connection.
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, append([]byte(nil), p...))
	w.mu.Unlock()
	return w.Conn.Write(p)
}

func (w *writeLog) first() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.writes) == 0 {
		return nil
	}
	return w.writes[0]
}

// TestMSA2Segments: MSA2 between two tunnels' halves over a pipe (one write
// is one segment): the dialer's first write is its hello followed by the
// first stream's open and data, the acceptor's its answer followed by the
// stream's accept and reply. So a cold peer's first round trip costs one
// segment each way, and the proof no round trip.
// msa2FirstWrites runs one MSA2 session with a stream echoing "ping" and
// returns each side's first write.
func msa2FirstWrites(t *testing.T) (d, a []byte) {
	kd, _ := key.NewPrivate()
	ka, _ := key.NewPrivate()
	dt := &Tunnel{cfg: Config{PrivateKey: kd}, pub: kd.Public(), ymxCfg: yamuxConfig(Config{SessionTimeout: 5 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)), defaultStreamWindow)}
	at := &Tunnel{cfg: Config{PrivateKey: ka}, pub: ka.Public(), ymxCfg: dt.ymxCfg}
	dp := &peer{t: dt, pub: at.pub, ctx: context.Background()}
	ap := &peer{t: at, pub: dt.pub, ctx: context.Background(), stamps: newHelloStamps(time.Now())}
	c1, c2 := net.Pipe()
	dc, ac := &writeLog{Conn: c1}, &writeLog{Conn: c2}
	defer dc.Close()
	defer ac.Close()

	checked := make(chan error, 1)
	proof, err := dt.dial2(dc, dp, func(err error) { checked <- err })
	if err != nil {
		t.Fatal(err)
	}
	cli, err := yamux.Client(proof, dt.ymxCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	served := make(chan error, 1)
	go func() {
		answer, err := at.acceptAuth(context.Background(), ac, ap)
		if err != nil {
			served <- err
			return
		}
		f := framing.NewConn(ac)
		f.Hold(answer)
		srv, err := yamux.Server(f, at.ymxCfg)
		if err != nil {
			served <- err
			return
		}
		defer srv.Close()
		s, err := srv.AcceptStream()
		if err != nil {
			served <- err
			return
		}
		buf := make([]byte, 4)
		io.ReadFull(s, buf)
		s.Write(buf)
		served <- nil
		io.Copy(io.Discard, s)
	}()
	s, err := cli.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(5 * time.Second))
	s.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if err := <-checked; err != nil {
		t.Fatalf("the dialer's check of the answer: %v", err)
	}
	return dc.first(), ac.first()
}

func TestMSA2Segments(t *testing.T) {
	// The hello is held for at most 1 ms (framing's openHold): on a loaded
	// machine (-race, CI) yamux's first frames can miss it once; a Hold
	// that never coalesces misses it every time.
	const hdr = 12
	var d, a []byte
	for try := 0; try < 5; try++ {
		d, a = msa2FirstWrites(t)
		if len(d) == hello2Len+hdr+hdr+4 && len(a) == answer2Len+hdr+hdr+4 {
			break
		}
	}
	// hello, then the open (window update, SYN), then a data frame "ping".
	if len(d) != hello2Len+hdr+hdr+4 || string(d[:4]) != session2Magic || d[hello2Len+1] != 1 || string(d[len(d)-4:]) != "ping" {
		t.Errorf("dialer's first write (%d bytes) %x: want the hello, the stream's open and its data", len(d), d)
	}
	if len(a) != answer2Len+hdr+hdr+4 || string(a[:4]) != session2Magic || a[answer2Len+1] != 1 || string(a[len(a)-4:]) != "ping" {
		t.Errorf("acceptor's first write (%d bytes) %x: want the answer, the stream's accept and its reply", len(a), a)
	}
}
