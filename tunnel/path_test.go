package tunnel

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// tick runs one probe round for pub as probeLoop does: judge, then send a
// probe, answered or not (an answer arrives before the next round).
func tick(b *PathBind, pub key.PublicKey, answered bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.paths[pub]
	b.judgeLocked(pub, p, time.Now())
	p.seq++
	i := p.seq % probeRing
	p.sent[i], p.acked[i] = p.seq, answered
}

func pathOf(b *PathBind, pub key.PublicKey) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.paths[pub].useRelay {
		return "relay"
	}
	return "direct"
}

// TestPathSwitching steps the probe judge through a new peer, a dead
// direct path, its return, and a lossy (gray) path.
func TestPathSwitching(t *testing.T) {
	b := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), key.PublicKey{1}, []byte("0123456789abcdef"),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	pub := key.PublicKey{2}
	b.SetPeer(pub, netip.MustParseAddrPort("127.0.0.1:9"))
	steps := []struct {
		name     string
		n        int
		answered func(i int) bool
		want     string
	}{
		{"new peer starts on the relay", 1, func(int) bool { return true }, "relay"},
		{"3 judged answered probes: direct", 4, func(int) bool { return true }, "direct"},
		{"steady", 20, func(int) bool { return true }, "direct"},
		{"direct path dies", 6, func(int) bool { return false }, "relay"},
		{"still dead", 20, func(int) bool { return false }, "relay"},
		{"back, but not a full window yet", 7, func(int) bool { return true }, "relay"},
		{"full window answered: direct again", 3, func(int) bool { return true }, "direct"},
		{"70% loss: relay", 12, func(i int) bool { return i%10 < 3 }, "relay"},
		{"70% loss stays on relay", 40, func(i int) bool { return i%10 < 3 }, "relay"},
		{"loss ends: direct", 10, func(int) bool { return true }, "direct"},
	}
	for _, s := range steps {
		for i := 0; i < s.n; i++ {
			tick(b, pub, s.answered(i))
		}
		if got := pathOf(b, pub); got != s.want {
			t.Fatalf("%s: path %s, want %s", s.name, got, s.want)
		}
	}
}
