package tunnel

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// TestProbeRoundInterleaving checks that a probe round judged outside the
// bind's lock (takeDue, judgeAll, applyDue) ends as a round run under the
// lock at once would, with the change that came in between ordered before
// or after the whole round. Each step builds two binds with the same
// history: one runs the round split, with the change between its halves;
// the other runs the change and the round serially, in the order given.
func TestProbeRoundInterleaving(t *testing.T) {
	peer := key.PublicKey{7}
	direct := netip.MustParseAddrPort("127.0.0.1:9")
	moved := netip.MustParseAddrPort("127.0.0.1:10")
	ack := func(b *PathBind, seq uint64) {
		b.mu.Lock()
		b.paths[peer].ack(seq)
		b.mu.Unlock()
	}
	steps := []struct {
		name   string
		change func(b *PathBind, inFlight uint64)
		first  bool // the serial run makes the change before the round
	}{
		{"nothing between", func(*PathBind, uint64) {}, false},
		{"the probe in flight is answered: counts next round", func(b *PathBind, s uint64) { ack(b, s) }, false},
		{"the session goes idle: judged as idle", func(b *PathBind, _ uint64) { b.SetBusy(peer, false) }, true},
		{"stops being probed: not judged", func(b *PathBind, _ uint64) { b.SetActive(peer, false) }, true},
		{"probed again: judged afresh", func(b *PathBind, _ uint64) { b.SetActive(peer, false); b.SetActive(peer, true) }, true},
		{"removed: not judged", func(b *PathBind, _ uint64) { b.RemovePeer(peer) }, true},
		{"new direct address: probed there", func(b *PathBind, _ uint64) { b.SetPeer(peer, moved) }, true},
	}
	start := time.Unix(1_700_000_000, 0)
	// history: four rounds, each probe answered but the last, in flight:
	// the round under test moves the new peer from the relay to direct.
	history := func() (*PathBind, uint64) {
		b := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), key.PublicKey{1}, []byte("0123456789abcdef"),
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		b.SetPeer(peer, direct)
		b.SetActive(peer, true)
		var seq uint64
		for r := range 4 {
			if r > 0 {
				ack(b, seq)
			}
			now := start.Add(time.Duration(r) * probeEvery)
			due := b.takeDue(now, nil)
			judgeAll(due, now)
			sends := b.applyDue(now, due, nil)
			seq = sends[0].seq
		}
		return b, seq
	}
	now := start.Add(4 * probeEvery)
	outcome := func(b *PathBind, due []judgement, sends []probeOut) roundOutcome {
		var r roundOutcome
		b.mu.Lock()
		if p := b.paths[peer]; p != nil {
			r.rec, r.next, r.choice, r.known = p.probeRecord, p.next, *p.choice.Load(), true
		}
		b.mu.Unlock()
		if !r.rec.changed.Equal(now) {
			r.rec.changed = time.Time{} // the peer's creation (time.Now), not this round's move
		}
		for _, j := range due {
			r.moved, r.toRelay = j.moved, j.toRelay
		}
		for _, s := range sends {
			r.to, r.seqs = append(r.to, s.to), append(r.seqs, s.seq)
		}
		return r
	}
	for _, s := range steps {
		split, inFlight := history()
		due := split.takeDue(now, nil)
		judgeAll(due, now)
		s.change(split, inFlight)
		sends := split.applyDue(now, due, nil)
		got := outcome(split, due, sends)

		serial, inFlight := history()
		if s.first {
			s.change(serial, inFlight)
		}
		due = serial.takeDue(now, nil)
		judgeAll(due, now)
		sends = serial.applyDue(now, due, nil)
		if !s.first {
			s.change(serial, inFlight)
		}
		want := outcome(serial, due, sends)

		if !got.equal(want) {
			t.Errorf("%s:\n got  %+v\n want %+v", s.name, got, want)
		}
	}

	// The history is what the steps need: the round moves the peer to
	// direct, and a change between the halves of it matters.
	b, _ := history()
	due := b.takeDue(now, nil)
	judgeAll(due, now)
	b.applyDue(now, due, nil)
	if len(due) != 1 || !due[0].moved || due[0].toRelay {
		t.Fatalf("history: the round under test does not move the peer to direct: %+v", due)
	}
}

// roundOutcome is what a probe round leaves of the peer.
type roundOutcome struct {
	rec     probeRecord
	next    time.Time
	choice  pathChoice
	known   bool
	moved   bool
	toRelay bool
	to      []netip.AddrPort
	seqs    []uint64
}

func (a roundOutcome) equal(b roundOutcome) bool {
	if a.rec != b.rec || !a.next.Equal(b.next) || a.choice != b.choice || a.known != b.known ||
		a.moved != b.moved || a.toRelay != b.toRelay || len(a.to) != len(b.to) {
		return false
	}
	for i := range a.to {
		if a.to[i] != b.to[i] || a.seqs[i] != b.seqs[i] {
			return false
		}
	}
	return true
}
