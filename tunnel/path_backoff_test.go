package tunnel

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// backoffBind is a bind with one active peer at direct whose probe rounds
// a test runs by hand (takeDue, judgeAll, applyDue) at times it chooses.
func backoffBind(peer key.PublicKey, direct netip.AddrPort) *PathBind {
	b := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), key.PublicKey{1}, []byte("0123456789abcdef"),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.SetRelay(nopRelay{}, "nop")
	b.SetPeer(peer, direct)
	b.SetActive(peer, true)
	return b
}

// round runs one probe round at now and returns the probes it sent and
// the peer's interval and next due time after it.
func round(b *PathBind, peer key.PublicKey, now time.Time) (sends []probeOut, every time.Duration, next time.Time) {
	due := b.takeDue(now, nil)
	judgeAll(due, now)
	sends = b.applyDue(now, due, nil)
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.paths[peer]
	return sends, p.every, p.next
}

// TestProbeBackoff: the advertised endpoint of a peer with a session is
// probed at a bounded rate once it stops answering (README "Hostile input
// and limits": a key holder advertising a third party's address). The
// interval doubles up to probeMaxEvery; the session turning busy again
// does not reset it (a peer cannot speed the probes up by opening a stream
// now and then); a path never answered is probed every probeSilentEvery
// after probeSilentAfter; an answer restores probeEvery at once; a path
// heard once stays at probeMaxEvery; and a peer that is no longer active
// is not probed at all.
func TestProbeBackoff(t *testing.T) {
	peer := key.PublicKey{7}
	victim := netip.MustParseAddrPort("127.0.0.1:9")
	b := backoffBind(peer, victim)
	now := time.Unix(1_700_000_000, 0)

	// Step table: the interval after each round of unanswered probes.
	want := []time.Duration{probeEvery, probeEvery, probeEvery, probeEvery, 2 * probeEvery, 4 * probeEvery,
		8 * probeEvery, probeMaxEvery, probeMaxEvery, probeMaxEvery}
	var next, silentFrom time.Time // silentFrom: the round that began the backoff
	var lastSeq uint64
	for i, w := range want {
		sends, every, nx := round(b, peer, now)
		if len(sends) != 1 || sends[0].to != victim {
			t.Fatalf("round %d: sent %+v, want one probe to %v", i, sends, victim)
		}
		if every != w {
			t.Fatalf("round %d: interval %v, want %v", i, every, w)
		}
		if every > probeEvery && silentFrom.IsZero() {
			silentFrom = now
		}
		next, lastSeq = nx, sends[0].seq
		now = next
	}

	// The session goes idle and busy again: the interval stays backed off
	// and the next probe is not brought forward.
	b.SetBusy(peer, false)
	b.SetBusy(peer, true)
	b.mu.Lock()
	p := b.paths[peer]
	every, nx := p.every, p.next
	b.mu.Unlock()
	if every != probeMaxEvery || !nx.Equal(next) {
		t.Fatalf("after idle and busy again: interval %v, next %v; want %v, %v (backoff kept)", every, nx, probeMaxEvery, next)
	}
	if sends := b.takeDue(now.Add(-time.Millisecond), nil); len(sends) != 0 {
		t.Fatal("a backed-off peer is due before its interval after turning busy")
	}

	// Never answered since the peer became active: after probeSilentAfter
	// of silence, probed only every probeSilentEvery.
	for every != probeSilentEvery {
		sends, e, nx := round(b, peer, now)
		if len(sends) != 1 {
			t.Fatalf("%v silent: sent %d probes in a due round", now.Sub(silentFrom), len(sends))
		}
		if every = e; e == probeSilentEvery && now.Sub(silentFrom) < probeSilentAfter {
			t.Fatalf("interval %v after only %v of silence", e, now.Sub(silentFrom))
		}
		if now.Sub(silentFrom) > probeSilentAfter+probeMaxEvery {
			t.Fatalf("interval still %v after %v of silence", e, now.Sub(silentFrom))
		}
		now, lastSeq = nx, sends[0].seq
	}

	// An answer to the probe in flight restores probeEvery at once.
	b.mu.Lock()
	b.paths[peer].ack(lastSeq)
	b.mu.Unlock()
	_, every, next = round(b, peer, now)
	if every != probeEvery {
		t.Fatalf("after an answer: interval %v, want %v", every, probeEvery)
	}
	// Not backed off any more: turning busy probes at the next tick.
	now = next
	round(b, peer, now)
	b.SetBusy(peer, false)
	b.SetBusy(peer, true)
	b.mu.Lock()
	every, nx = b.paths[peer].every, b.paths[peer].next
	b.mu.Unlock()
	if every != probeEvery || !nx.IsZero() {
		t.Fatalf("answering path turning busy: interval %v, next %v; want %v, due now", every, nx, probeEvery)
	}

	// A path that answered since the peer became active and then went
	// silent keeps probeMaxEvery however long the silence (it comes back
	// quickly when the network does).
	for end := now.Add(3 * probeSilentAfter); now.Before(end); {
		_, e, nx := round(b, peer, now)
		if e > probeMaxEvery {
			t.Fatalf("a path heard before: interval %v after %v of silence", e, 3*probeSilentAfter-end.Sub(now))
		}
		now = nx
	}

	// No session: not probed.
	b.SetActive(peer, false)
	if sends, _, _ := round(b, peer, now.Add(time.Hour)); len(sends) != 0 {
		t.Fatalf("inactive peer probed: %+v", sends)
	}
}

// TestProbeBackoffBusyToggling: a peer whose session keeps turning busy
// (a stream every 3 s) while its advertised endpoint never answers gets a
// bounded trickle of probes there: in the first minute about
// 60/probeMaxEvery plus the first few, then one per probeSilentEvery — not
// the five a second of a busy session.
func TestProbeBackoffBusyToggling(t *testing.T) {
	peer := key.PublicKey{7}
	b := backoffBind(peer, netip.MustParseAddrPort("127.0.0.1:9"))
	start := time.Unix(1_700_000_000, 0)
	const span = 5 * time.Minute
	sent, firstMinute := 0, 0
	busy := true
	for now := start; now.Before(start.Add(span)); now = now.Add(probeEvery / 2) {
		if k := now.Sub(start) / (3 * time.Second); (k%2 == 0) != busy {
			busy = !busy
			b.SetBusy(peer, busy)
		}
		sends, _, _ := round(b, peer, now)
		sent += len(sends)
		if now.Sub(start) < time.Minute {
			firstMinute = sent
		}
	}
	limit := int(time.Minute/probeMaxEvery) + 10 + int((span-time.Minute)/probeSilentEvery) + 2
	if sent > limit {
		t.Fatalf("%d probes to a silent endpoint in %v, want at most %d", sent, span, limit)
	}
	t.Logf("%d probes in %v to an endpoint that never answers (%d in the first minute)", sent, span, firstMinute)
}
