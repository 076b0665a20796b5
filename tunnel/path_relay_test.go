package tunnel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// beat is the pacer's beat the probe-loop model below rides (gossip's
// BeatInterval): an unhurried wait ends at the first beat at or after it.
const beat = 2 * time.Second

// loopModel runs a bind's probe rounds as probeLoop does, on an injected
// clock: after each round it sleeps untilDue, to the first beat at or
// after that when untilDue says idle (ResetLoose), beats every `beat` from
// start. answer says whether the probe sent at a round is answered (the
// pong comes before the next round).
type loopModel struct {
	b      *PathBind
	peer   key.PublicKey
	start  time.Time
	now    time.Time
	sent   []time.Time // when each probe went
	answer func(n int, at time.Time) bool
}

func newLoopModel(b *PathBind, peer key.PublicKey, start time.Time, answer func(n int, at time.Time) bool) *loopModel {
	return &loopModel{b: b, peer: peer, start: start, now: start, answer: answer}
}

// step runs one round at m.now and advances m.now to the next one.
func (m *loopModel) step() {
	sends, _, _ := round(m.b, m.peer, m.now)
	kicked := false
	for _, s := range sends {
		if m.answer(len(m.sent), m.now) {
			m.b.mu.Lock()
			kicked = m.b.paths[m.peer].answered(s.seq, m.now.Add(time.Millisecond)) || kicked
			m.b.mu.Unlock()
		}
		m.sent = append(m.sent, m.now)
	}
	if kicked { // the loop runs a round at once (kickLoop), a round trip on
		m.now = m.now.Add(time.Millisecond)
		return
	}
	d, idle := m.b.untilDue(m.now)
	next := m.now.Add(d)
	if idle {
		k := (next.Sub(m.start) + beat - 1) / beat
		next = m.start.Add(k * beat)
	}
	m.now = next
}

func (m *loopModel) path() string {
	if p, _ := m.b.Path(m.peer); p == "relay" {
		return "relay"
	}
	return "direct"
}

// TestProbeRelayConfirm: a peer whose session is idle and whose path is on
// the relay is probed every probeEvery while its direct path answers,
// until direct is confirmed, then at the idle rate again (riding the
// beat). With the idle rate throughout (before), a new idle peer took
// three probes 3 s apart, each up to a beat late: ~9-15 s of `relay` on
// the node that did not dial; and one whose first probe went unanswered
// (the peer did not know this node yet: TestRelayNetnsPathFailover's
// flake) needed a whole window of eight, 24-40 s.
func TestProbeRelayConfirm(t *testing.T) {
	peer := key.PublicKey{7}
	direct := netip.MustParseAddrPort("127.0.0.1:9")
	all := func(int, time.Time) bool { return true }
	steps := []struct {
		name   string
		busy   bool
		answer func(n int, at time.Time) bool
		within time.Duration // from the first answered probe to direct
	}{
		{"idle new peer, every probe answered", false, all, time.Second},
		{"busy new peer, every probe answered", true, all, time.Second},
		{"idle new peer, its first probe lost (the peer did not know us yet)", false,
			func(n int, _ time.Time) bool { return n > 0 }, time.Second},
		{"idle new peer, its first five probes lost (backed off: 400 ms, then probeEvery again)", false,
			func(n int, _ time.Time) bool { return n > 4 }, 1500 * time.Millisecond},
	}
	for _, s := range steps {
		b := backoffBind(peer, direct)
		b.SetBusy(peer, s.busy)
		start := time.Unix(1_700_000_000, 0)
		m := newLoopModel(b, peer, start, s.answer)
		var firstAnswer, at time.Time // at: the round that moved it
		for m.path() == "relay" && m.now.Sub(start) < time.Minute {
			n := len(m.sent)
			at = m.now
			m.step()
			if firstAnswer.IsZero() && len(m.sent) > n && s.answer(n, m.sent[n]) {
				firstAnswer = m.sent[n]
			}
		}
		took := at.Sub(firstAnswer)
		if m.path() != "direct" || took > s.within {
			t.Errorf("%s: %s %v after the first answer (%d probes); want direct within %v", s.name, m.path(), took, len(m.sent), s.within)
			continue
		}
		// Confirmed: the idle rate again, riding the beat; busy stays fast.
		for range 3 {
			m.step()
		}
		b.mu.Lock()
		p := b.paths[peer]
		every, unhurried := p.every, p.unhurried()
		b.mu.Unlock()
		wantEvery := probeIdleEvery
		if s.busy {
			wantEvery = probeEvery
		}
		if every != wantEvery || unhurried == s.busy || m.path() != "direct" {
			t.Errorf("%s: after direct is confirmed: path %s, interval %v, unhurried %v; want direct, %v, %v",
				s.name, m.path(), every, unhurried, wantEvery, !s.busy)
		}
		t.Logf("%s: direct %v after the first answer, %d probes", s.name, took, len(m.sent))
	}

	// An idle peer whose direct path died and came back: the relay while
	// it is dead (probes backed off), direct again within a window of
	// probeEvery probes of its return plus the backed-off wait.
	b := backoffBind(peer, direct)
	b.SetBusy(peer, false)
	start := time.Unix(1_700_000_000, 0)
	var down, up time.Time
	m := newLoopModel(b, peer, start, func(_ int, at time.Time) bool {
		return !(!down.IsZero() && at.After(down) && (up.IsZero() || at.Before(up)))
	})
	for m.now.Sub(start) < 10*time.Second {
		m.step()
	}
	if m.path() != "direct" {
		t.Fatalf("came back: path %s before the cut", m.path())
	}
	down = m.now
	for m.now.Sub(down) < 30*time.Second {
		m.step()
	}
	if m.path() != "relay" {
		t.Fatalf("cut: path %s after 30 s", m.path())
	}
	b.mu.Lock()
	every := b.paths[peer].every
	b.mu.Unlock()
	if every != probeMaxEvery {
		t.Errorf("cut: interval %v after 30 s of silence, want %v (backed off, as at the idle rate)", every, probeMaxEvery)
	}
	up = m.now
	at := m.now
	for m.path() == "relay" && m.now.Sub(up) < time.Minute {
		at = m.now
		m.step()
	}
	if took := at.Sub(up); m.path() != "direct" || took > probeMaxEvery+probeComeBack*probeEvery+beat {
		t.Errorf("came back: %s %v after the path returned, want direct within %v", m.path(), took, probeMaxEvery+probeComeBack*probeEvery+beat)
	} else {
		t.Logf("direct path back: direct again %v after it returned", took)
	}
}

// TestProbeIdleRelayCost: an idle peer whose direct path never answers (a
// node behind a UDP-blocking firewall: on the relay for good) costs what
// it did at the idle rate once it settles: after probeSilentAfter one
// probe per probeSilentEvery. Its first probes back off from probeEvery
// (200, 200, 200, 200, 350, 750, 1550 ms apart, then probeMaxEvery on the
// beat) where the idle rate started at probeIdleEvery: in this model 24
// probes in the first two minutes where the idle rate sent 21 (15 + 6),
// then 2 a minute either way; 40 in 10 minutes against 37.
func TestProbeIdleRelayCost(t *testing.T) {
	peer := key.PublicKey{7}
	b := backoffBind(peer, netip.MustParseAddrPort("127.0.0.1:9"))
	b.SetBusy(peer, false)
	start := time.Unix(1_700_000_000, 0)
	m := newLoopModel(b, peer, start, func(int, time.Time) bool { return false })
	for m.now.Sub(start) < 10*time.Minute {
		m.step()
		if m.path() != "relay" {
			t.Fatalf("path %s at %v", m.path(), m.now.Sub(start))
		}
	}
	perMinute := make([]int, 10)
	for _, at := range m.sent {
		perMinute[at.Sub(start)/time.Minute]++
	}
	var gaps []time.Duration
	for i := 1; i < len(m.sent) && i < 8; i++ {
		gaps = append(gaps, m.sent[i].Sub(m.sent[i-1]))
	}
	want := []time.Duration{probeEvery, probeEvery, probeEvery, probeEvery, 2 * probeEvery, 4 * probeEvery, 8 * probeEvery}
	for i, w := range want {
		// A round is due a quarter probeEvery early and runs at the
		// loop's next wakeup, at least probeEvery on.
		if g := gaps[i]; g < w-probeEvery/4 || g > w+probeEvery {
			t.Errorf("gap %d between probes %v, want about %v (all: %v)", i, g, w, gaps)
		}
	}
	if n := perMinute[0] + perMinute[1]; n > 24 {
		t.Errorf("%d probes in the first two minutes, want at most 24", n)
	}
	for i, n := range perMinute[2:] {
		if n > 2 {
			t.Errorf("%d probes in minute %d, want at most 2 (one per %v)", n, i+3, probeSilentEvery)
		}
	}
	if len(m.sent) > 40 {
		t.Errorf("%d probes in 10 minutes, want at most 40", len(m.sent))
	}
	t.Logf("probes per minute to a direct path that never answers, idle peer: %v (%d in 10 min); first gaps %v", perMinute, len(m.sent), gaps)
}
