package tunnel

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

func newProbingTunnel(t testing.TB) *Tunnel {
	t.Helper()
	tn := newTunnelConfig(t, Config{HandleStream: echo, ClusterKey: []byte("0123456789abcdef0123456789abcdef")})
	t.Cleanup(func() { tn.Close() })
	return tn
}

func roundTrip(t testing.TB, from, to *Tunnel, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := from.OpenStream(ctx, to.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(d))
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	return time.Since(start)
}

func probesSent(t *Tunnel, pub key.PublicKey) uint64 {
	st, _ := t.SessionStats(pub)
	return st.Probes
}

func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoSessionWithoutTraffic: peers that know each other but exchange no
// stream send each other nothing: no handshake, no session, no probes.
func TestNoSessionWithoutTraffic(t *testing.T) {
	a, b := newProbingTunnel(t), newProbingTunnel(t)
	link(t, a, b)
	time.Sleep(700 * time.Millisecond) // several probe and ping intervals
	for _, x := range []struct{ from, to *Tunnel }{{a, b}, {b, a}} {
		st := x.from.Stats()[x.to.PublicKey()]
		if st.SessionUp || st.Session != SessionStateIdle || !st.LastHandshake.IsZero() || st.TxBytes != 0 || st.RTT != 0 {
			t.Fatalf("idle peer has traffic: %+v", st)
		}
		if n := probesSent(x.from, x.to.PublicKey()); n != 0 {
			t.Fatalf("idle peer probed %d times", n)
		}
		if ss := x.from.Sessions(); len(ss) != 0 {
			t.Fatalf("sessions: %+v", ss)
		}
	}
}

// TestSessionOnDemand: the first stream opens the session; CloseIdle
// closes it once it carries nothing (not while a stream is open), probes
// stop with it, and the next stream opens a new one.
func TestSessionOnDemand(t *testing.T) {
	a, b := newProbingTunnel(t), newProbingTunnel(t)
	link(t, a, b)
	first := roundTrip(t, a, b, 5*time.Second)
	t.Logf("first stream to an idle peer: %v", first)
	st := a.Stats()[b.PublicKey()]
	if !st.SessionUp || st.Session != SessionStateUp || !st.Owned {
		t.Fatalf("after the first stream: %+v", st)
	}
	if bs := b.Stats()[a.PublicKey()]; !bs.SessionUp || bs.Owned {
		t.Fatalf("other side: %+v", bs)
	}
	// b may use a's session too, without making its own.
	roundTrip(t, b, a, 5*time.Second)
	if bs := b.Stats()[a.PublicKey()]; bs.Owned || len(b.Sessions()) != 1 {
		t.Fatalf("b made a session although a's was up: %+v %+v", bs, b.Sessions())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s, err := a.OpenStream(ctx, b.PublicKey())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if b.CloseIdle(a.PublicKey()) {
		t.Fatal("b closed a session it does not own")
	}
	if a.CloseIdle(b.PublicKey()) {
		t.Fatal("closed a session that carries a stream")
	}
	s.Close()
	waitUntil(t, 2*time.Second, "the stream to be gone", func() bool { return a.Stats()[b.PublicKey()].Streams == 0 })
	if !a.CloseIdle(b.PublicKey()) {
		t.Fatal("CloseIdle did not close an idle session")
	}
	waitUntil(t, 2*time.Second, "both sides idle", func() bool {
		return a.Stats()[b.PublicKey()].Session == SessionStateIdle && b.Stats()[a.PublicKey()].Session == SessionStateIdle
	})
	if st := a.Stats()[b.PublicKey()]; st.RTT != 0 {
		t.Fatalf("idle peer keeps an RTT: %+v", st)
	}
	n := probesSent(a, b.PublicKey())
	time.Sleep(500 * time.Millisecond)
	if m := probesSent(a, b.PublicKey()); m != n {
		t.Fatalf("idle peer still probed: %d -> %d", n, m)
	}
	again := roundTrip(t, a, b, 5*time.Second)
	t.Logf("first stream after the idle close: %v", again)
}

// TestWarmKeepsSession: a warm peer gets a session without any stream and
// a new one when it breaks; when no longer warm, CloseIdle may close it.
func TestWarmKeepsSession(t *testing.T) {
	a, b := newProbingTunnel(t), newProbingTunnel(t)
	a.SetWarm([]key.PublicKey{b.PublicKey()}) // before a knows b: remembered
	link(t, a, b)
	waitUntil(t, 3*time.Second, "warm session", func() bool { return a.Stats()[b.PublicKey()].SessionUp })
	waitUntil(t, 3*time.Second, "pings", func() bool { return a.Stats()[b.PublicKey()].RTT > 0 })
	waitUntil(t, 4*probeIdleEvery, "probes", func() bool { return probesSent(a, b.PublicKey()) >= 3 })
	if !a.CloseIdle(b.PublicKey()) {
		t.Fatal("CloseIdle refused")
	}
	// Still warm: the dial loop brings it back.
	waitUntil(t, 3*time.Second, "warm session back", func() bool { return a.Stats()[b.PublicKey()].SessionUp })
	a.SetWarm(nil)
	if !a.CloseIdle(b.PublicKey()) {
		t.Fatal("CloseIdle refused")
	}
	time.Sleep(400 * time.Millisecond)
	if st := a.Stats()[b.PublicKey()]; st.Session != SessionStateIdle {
		t.Fatalf("no longer warm, yet: %+v", st)
	}
}

// TestBothWant: both sides warm each other at once and both dial. Their
// WireGuard initiations must not cross (that costs a 5 s retry): the
// sessions are up well within 2 s. If both TCP dials got through, both
// sides agree on the session new streams use, and CloseSpare closes the
// other, after which one session serves both ways.
func TestBothWant(t *testing.T) {
	for round := range 3 {
		a, b := newProbingTunnel(t), newProbingTunnel(t)
		a.SetWarm([]key.PublicKey{b.PublicKey()})
		b.SetWarm([]key.PublicKey{a.PublicKey()})
		start := time.Now()
		link(t, a, b)
		waitUntil(t, 2*time.Second, "sessions", func() bool {
			return a.Stats()[b.PublicKey()].SessionUp && b.Stats()[a.PublicKey()].SessionUp
		})
		t.Logf("round %d: session up after %v", round, time.Since(start))
		roundTrip(t, a, b, 5*time.Second)
		roundTrip(t, b, a, 5*time.Second)
		oneSessionLeft(t, a, b, true)
		roundTrip(t, a, b, 5*time.Second)
		roundTrip(t, b, a, 5*time.Second)
	}
}

// TestCalledSessionOwnedByCaller: when the larger key needs a session, the
// smaller dials it on its behalf; the caller owns it (closes it when idle),
// the dialler does not.
func TestCalledSessionOwnedByCaller(t *testing.T) {
	a, b := newProbingTunnel(t), newProbingTunnel(t)
	if a.PublicKey().Less(b.PublicKey()) {
		a, b = b, a
	}
	link(t, a, b) // a has the larger key: it calls
	roundTrip(t, a, b, 5*time.Second)
	sa, sb := a.Stats()[b.PublicKey()], b.Stats()[a.PublicKey()]
	if !sa.Owned || sb.Owned {
		t.Fatalf("caller owns %v, dialler owns %v", sa.Owned, sb.Owned)
	}
	waitUntil(t, 2*time.Second, "stream gone", func() bool { return a.Stats()[b.PublicKey()].Streams == 0 })
	if b.CloseIdle(a.PublicKey()) {
		t.Fatal("the dialler closed the caller's session")
	}
	if !a.CloseIdle(b.PublicKey()) {
		t.Fatal("the caller could not close its session")
	}
	waitUntil(t, 2*time.Second, "both idle", func() bool {
		return a.Stats()[b.PublicKey()].Session == SessionStateIdle && b.Stats()[a.PublicKey()].Session == SessionStateIdle
	})
}

// TestStrangerHandshakeAnswered: a dials b before b knows a (b's WireGuard
// drops the handshake; its retry would come 5 s later). When b learns of a,
// it answers with a handshake of its own: the stream is up well before.
func TestStrangerHandshakeAnswered(t *testing.T) {
	for round := range 3 {
		a, b := newProbingTunnel(t), newProbingTunnel(t)
		if err := a.SetPeers([]Peer{{PublicKey: b.PublicKey(), Endpoint: b.LocalAddr()}}); err != nil {
			t.Fatal(err)
		}
		done := make(chan time.Duration, 1)
		go func() {
			done <- roundTrip(t, a, b, 10*time.Second)
		}()
		time.Sleep(300 * time.Millisecond) // a's first handshake is dropped by b
		learned := time.Now()
		if err := b.SetPeers([]Peer{{PublicKey: a.PublicKey(), Endpoint: a.LocalAddr()}}); err != nil {
			t.Fatal(err)
		}
		<-done
		after := time.Since(learned)
		t.Logf("round %d: stream %v after b learned of a", round, after)
		if after > 2*time.Second {
			t.Fatalf("round %d: stream took %v after b learned of a (WireGuard's 5 s retry?)", round, after)
		}
	}
}

// TestPeerRestartRecovers: a warm peer restarts (same key, same address).
// Our WireGuard still holds the old run's keypair and would notice only
// after 15 s of silence; the restarted peer sees our transport packets with
// no handshake since its start and answers with a handshake, so the
// session is back within seconds.
func TestPeerRestartRecovers(t *testing.T) {
	a := newProbingTunnel(t)
	kb, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	start := func(addr netip.AddrPort) *Tunnel {
		tn, err := New(Config{PrivateKey: kb, Listen: addr, HandleStream: echo,
			ClusterKey: []byte("0123456789abcdef0123456789abcdef")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tn.Close() })
		return tn
	}
	b := start(netip.MustParseAddrPort("127.0.0.1:0"))
	a.SetWarm([]key.PublicKey{b.PublicKey()})
	link(t, a, b)
	roundTrip(t, a, b, 5*time.Second)
	addr := b.LocalAddr()
	b.Close()
	time.Sleep(300 * time.Millisecond)
	restarted := time.Now()
	b = start(addr)
	if err := b.SetPeers([]Peer{{PublicKey: a.PublicKey(), Endpoint: a.LocalAddr()}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 8*time.Second, "the session to the restarted peer", func() bool {
		st := a.Stats()[b.PublicKey()]
		return st.SessionUp && st.LastPong.After(restarted)
	})
	t.Logf("session back %v after the restart", time.Since(restarted).Round(time.Millisecond))
	roundTrip(t, a, b, 5*time.Second)
}

// TestIdleMembersCostNoGoroutines: members without traffic are not
// WireGuard peers of the device (wireguard-go spends two goroutines and
// ~44 KB on each) and have no goroutine of ours.
func TestIdleMembersCostNoGoroutines(t *testing.T) {
	a := newProbingTunnel(t)
	base := runtime.NumGoroutine()
	var ps []Peer
	for i := range 200 {
		k, err := key.NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, Peer{PublicKey: k.Public(), Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(40000+i))})
	}
	if err := a.SetPeers(ps); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if d := runtime.NumGoroutine() - base; d > 5 {
		t.Fatalf("200 idle members cost %d goroutines", d)
	}
	on := 0
	for _, st := range a.AllSessionStats() {
		if st.WireGuard {
			on++
		}
	}
	if on != 0 {
		t.Fatalf("%d idle members are WireGuard peers", on)
	}
	if st := a.Stats(); len(st) != 200 || st[ps[0].PublicKey].Session != SessionStateIdle {
		t.Fatalf("stats: %d peers, %+v", len(st), st[ps[0].PublicKey])
	}
}

// TestIdleWireGuardPeerTrimmed: a peer whose session closed long ago loses
// its WireGuard entry (trimIdle, clock injected), and the next stream
// brings both back.
func TestIdleWireGuardPeerTrimmed(t *testing.T) {
	a, b := newProbingTunnel(t), newProbingTunnel(t)
	link(t, a, b)
	roundTrip(t, a, b, 5*time.Second)
	pa, pb := b.PublicKey(), a.PublicKey() // a's peer, b's peer
	wgOn := func(tn *Tunnel, pub key.PublicKey) bool {
		st, _ := tn.SessionStats(pub)
		return st.WireGuard
	}
	if !wgOn(a, pa) || !wgOn(b, pb) {
		t.Fatal("no WireGuard peers after a stream")
	}
	waitUntil(t, 2*time.Second, "stream gone", func() bool { return a.Stats()[b.PublicKey()].Streams == 0 })
	a.CloseIdle(b.PublicKey())
	b.CloseIdle(a.PublicKey())
	waitUntil(t, 2*time.Second, "idle", func() bool {
		return a.Stats()[b.PublicKey()].Session == SessionStateIdle && b.Stats()[a.PublicKey()].Session == SessionStateIdle
	})
	a.trimIdle(time.Now().Add(wgIdleAfter / 2))
	if !wgOn(a, pa) {
		t.Fatal("trimmed before wgIdleAfter")
	}
	later := time.Now().Add(wgIdleAfter + time.Second)
	a.trimIdle(later)
	b.trimIdle(later)
	if wgOn(a, pa) || wgOn(b, pb) {
		t.Fatal("idle WireGuard peers not trimmed")
	}
	if st := a.Stats()[b.PublicKey()]; !st.LastHandshake.IsZero() {
		t.Fatalf("trimmed peer still in WireGuard: %+v", st)
	}
	roundTrip(t, b, a, 5*time.Second)
	roundTrip(t, a, b, 5*time.Second)
}

// TestPassiveSideNotProbing: the node that keeps a peer warm probes it; the
// peer, which does not need the session, answers and sends no probes of its
// own while it hears them (an exporter many importers keep warm would
// otherwise probe every one of them). A stream makes it probe again.
func TestPassiveSideNotProbing(t *testing.T) {
	a, b := newProbingTunnel(t), newProbingTunnel(t)
	a.SetWarm([]key.PublicKey{b.PublicKey()})
	link(t, a, b)
	waitUntil(t, 3*time.Second, "warm session", func() bool {
		return a.Stats()[b.PublicKey()].SessionUp && b.Stats()[a.PublicKey()].SessionUp
	})
	// b's first probes settle its path on direct; then it goes quiet.
	waitUntil(t, 5*time.Second+3*probeIdleEvery, "a's probes", func() bool { return probesSent(a, b.PublicKey()) >= probeFirstVerdict+2 })
	fromA, fromB := probesSent(a, b.PublicKey()), probesSent(b, a.PublicKey())
	idle := 3*probeIdleEvery + 500*time.Millisecond // three idle probe intervals
	time.Sleep(idle)
	da, db := probesSent(a, b.PublicKey())-fromA, probesSent(b, a.PublicKey())-fromB
	t.Logf("over %v idle: a (warm) sent %d probes, b (passive) %d", idle, da, db)
	if da < 2 {
		t.Fatalf("the warm side sent %d probes in %v, want ≥ 2", da, idle)
	}
	if db > 1 {
		t.Fatalf("the passive side sent %d probes in %v while it heard the peer's, want ≤ 1", db, idle)
	}
	if st := b.Stats()[a.PublicKey()]; !st.SessionUp || st.Path != "direct" {
		t.Fatalf("passive side: %+v", st)
	}
	// A stream: b is busy and probes at the busy rate again.
	before := probesSent(b, a.PublicKey())
	roundTrip(t, a, b, 5*time.Second)
	waitUntil(t, 2*time.Second, "b probing again", func() bool { return probesSent(b, a.PublicKey()) >= before+2 })
}

// TestSimultaneousColdOpen: two cold peers (no session, no WireGuard peer
// on either side) both open a stream to the other at the same moment, as
// clients on both nodes would. Both sides dial; their WireGuard initiations
// cross unless the smaller key's wins (noteHandshake), which would cost
// WireGuard's 5 s retry. Every stream must succeed, within 2 s, in every
// round, and afterwards one session (or two, one of them redundant, which
// CloseSpare closes) serves both ways.
func TestSimultaneousColdOpen(t *testing.T) {
	a, b := newProbingTunnel(t), newProbingTunnel(t)
	link(t, a, b)
	for round := range 6 {
		if round > 0 {
			makeCold(t, a, b)
		}
		type res struct {
			d   time.Duration
			err error
		}
		results := make(chan res, 2)
		startGate := make(chan struct{})
		for _, x := range []struct{ from, to *Tunnel }{{a, b}, {b, a}} {
			go func() {
				<-startGate
				d, err := roundTripErr(x.from, x.to, 5*time.Second)
				results <- res{d, err}
			}()
		}
		close(startGate)
		for range 2 {
			r := <-results
			if r.err != nil {
				t.Fatalf("round %d: a first stream failed: %v", round, r.err)
			}
			if r.d > 2*time.Second {
				t.Fatalf("round %d: a first stream took %v (crossing WireGuard handshakes: the 5 s retry?)", round, r.d)
			}
			t.Logf("round %d: first stream %v", round, r.d.Round(time.Microsecond))
		}
		oneSessionLeft(t, a, b, false)
		roundTrip(t, a, b, 5*time.Second)
		roundTrip(t, b, a, 5*time.Second)
	}
}

// roundTripErr is roundTrip for another goroutine than the test's.
func roundTripErr(from, to *Tunnel, d time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := from.OpenStream(ctx, to.PublicKey())
	if err != nil {
		return 0, err
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(d))
	if _, err := s.Write([]byte("ping")); err != nil {
		return 0, err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		return 0, fmt.Errorf("echo: %q %w", buf, err)
	}
	return time.Since(start), nil
}

// oneSessionLeft waits until a and b carry no stream, closes a redundant
// session of a double dial on each (CloseSpare), and waits until each holds
// one session that is not redundant (and up on both sides, if up).
func oneSessionLeft(t *testing.T, a, b *Tunnel, up bool) {
	t.Helper()
	waitUntil(t, 2*time.Second, "streams gone", func() bool {
		return a.Stats()[b.PublicKey()].Streams == 0 && b.Stats()[a.PublicKey()].Streams == 0
	})
	a.CloseSpare(b.PublicKey())
	b.CloseSpare(a.PublicKey())
	waitUntil(t, 2*time.Second, "one session", func() bool {
		sa, sb := a.Sessions(), b.Sessions()
		return len(sa) == 1 && len(sb) == 1 && !sa[0].Redundant && !sb[0].Redundant &&
			(!up || a.Stats()[b.PublicKey()].SessionUp && b.Stats()[a.PublicKey()].SessionUp)
	})
}
