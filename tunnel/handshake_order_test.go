package tunnel

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// hsStep is one WireGuard message seen by the bind (noteSent,
// noteHandshake) at a time the test chooses, and what must follow.
type hsStep struct {
	at     time.Duration
	op     string // send-init, send-resp, recv-init, recv-resp (to our last initiation), recv-old-resp, recv-data, wg-on, wg-off
	drop   bool   // the message is dropped
	held   bool   // an initiation is held for the tunnel (TakeHeld)
	queued bool   // the peer is queued for the tunnel (Stale)
	resent bool   // this node's pending initiation is to be sent again if still unanswered (resendInitiation)
}

// TestHandshakeOrder: the decisions that make one WireGuard handshake set
// a session up (noteHandshake, noteSent), step by step with an injected
// clock: an initiation from a peer that is not a WireGuard peer yet is held,
// not lost; of two crossing initiations the smaller key's wins, on either
// order of events; nothing is held back once answered or after initPending.
func TestHandshakeOrder(t *testing.T) {
	k1, k2 := key.PublicKey{1}, key.PublicKey{2}
	smaller := []hsStep{
		{at: 0, op: "recv-init", drop: true, held: true, queued: true},
		{at: time.Millisecond, op: "recv-init", drop: true, held: true}, // the newer one replaces it, queued once
		{at: 2 * time.Millisecond, op: "wg-on"},
		// Our initiation is out: the larger's crosses it and is dropped;
		// ours is to go again, once.
		{at: 3 * time.Millisecond, op: "send-init"},
		{at: 4 * time.Millisecond, op: "recv-init", drop: true, resent: true},
		{at: 5 * time.Millisecond, op: "recv-init", drop: true},
		// Answered: the larger's initiations are still dropped for
		// answerGrace (the answer may wait in WireGuard's queue); ours
		// goes again at most once per initiation, and only unanswered.
		{at: 6 * time.Millisecond, op: "recv-resp"},
		{at: 7 * time.Millisecond, op: "recv-init", drop: true},
		// Answered answerGrace ago: the larger's goes to WireGuard (a
		// restarted peer, say). One WireGuard makes of its own before or
		// while it answers is withheld, until answerGrace after its answer.
		{at: 7*time.Millisecond + answerGrace, op: "recv-init"},
		{at: 8*time.Millisecond + answerGrace, op: "send-init", drop: true},
		{at: 9*time.Millisecond + answerGrace, op: "send-resp"},
		{at: 10*time.Millisecond + answerGrace, op: "send-init", drop: true},
		{at: 10*time.Millisecond + 2*answerGrace, op: "send-init"},
		// A late answer to an older initiation does not answer this one.
		{at: 11*time.Millisecond + 2*answerGrace, op: "recv-old-resp"},
		{at: 12*time.Millisecond + 2*answerGrace, op: "recv-init", drop: true, resent: true},
		// initPending after ours, the larger's goes to WireGuard.
		{at: 10*time.Millisecond + 2*answerGrace + initPending, op: "recv-init"},
		{at: 11*time.Millisecond + 2*answerGrace + initPending, op: "recv-data"},
		{at: 12*time.Millisecond + 2*answerGrace + initPending, op: "send-init", drop: true},
		// No longer a WireGuard peer: transport data queues it; made anew,
		// its handshakes are forgotten: ours goes, and wins.
		{at: 13*time.Millisecond + 2*answerGrace + initPending, op: "wg-off"},
		{at: 14*time.Millisecond + 2*answerGrace + initPending, op: "recv-data", drop: true, queued: true},
		{at: 15*time.Millisecond + 2*answerGrace + initPending, op: "wg-on"},
		{at: 16*time.Millisecond + 2*answerGrace + initPending, op: "send-init"},
		{at: 17*time.Millisecond + 2*answerGrace + initPending, op: "recv-init", drop: true, resent: true},
	}
	larger := []hsStep{
		{at: 0, op: "wg-on"},
		{at: time.Millisecond, op: "send-init"},
		{at: 2 * time.Millisecond, op: "recv-init"}, // the smaller's wins: let through
		{at: 3 * time.Millisecond, op: "send-init"}, // never withheld here
		{at: 4 * time.Millisecond, op: "recv-init"},
		{at: 5 * time.Millisecond, op: "wg-off"},
		{at: 6 * time.Millisecond, op: "recv-init", drop: true, held: true, queued: true},
	}
	for _, tc := range []struct {
		name       string
		self, peer key.PublicKey
		steps      []hsStep
	}{{"smaller", k1, k2, smaller}, {"larger", k2, k1, larger}} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), tc.self, []byte("0123456789abcdef"),
				slog.New(slog.NewTextHandler(io.Discard, nil)))
			from := netip.MustParseAddrPort("127.0.0.1:1")
			b.SetPeer(tc.peer, from)
			pp := b.peer(tc.peer)
			base := time.Now()
			for i, st := range tc.steps {
				now := base.Add(st.at).UnixNano()
				pkt := func(typ byte, n int) []byte {
					p := make([]byte, n)
					p[0], p[1], p[4] = typ, byte(i), byte(i) // [4:8]: an initiation's sender index
					return p
				}
				resentBefore := pp.resentAt.Load()
				var drop bool
				switch st.op {
				case "wg-on", "wg-off":
					b.SetWG(tc.peer, st.op == "wg-on")
				case "send-init":
					drop = b.noteSent(pp, tc.peer, pkt(wgInitiationType, wgInitiationLen), now)
				case "send-resp":
					drop = b.noteSent(pp, tc.peer, pkt(wgResponseType, 92), now)
				case "recv-init":
					drop = b.noteHandshake(pp, tc.peer, pkt(wgInitiationType, wgInitiationLen), from, now)
				case "recv-resp", "recv-old-resp":
					r := pkt(wgResponseType, 92)
					if ip := pp.initPkt.Load(); ip != nil && st.op == "recv-resp" {
						copy(r[8:12], (*ip)[4:8]) // names our initiation
					}
					drop = b.noteHandshake(pp, tc.peer, r, from, now)
				case "recv-data":
					drop = b.noteHandshake(pp, tc.peer, pkt(wgTransportType, 64), from, now)
				default:
					t.Fatalf("step %d: op %q", i, st.op)
				}
				queued := false
				select {
				case got := <-b.stale:
					queued = got == tc.peer
				default:
				}
				h := pp.held.Load()
				resent := pp.resentAt.Load() != resentBefore && !strings.HasPrefix(st.op, "wg-")
				if drop != st.drop || (h != nil) != st.held || queued != st.queued || resent != st.resent {
					t.Fatalf("step %d (%v %s): drop %v held %v queued %v resent %v, want %+v",
						i, st.at, st.op, drop, h != nil, queued, resent, st)
				}
				if h != nil && (h.pkt[1] != byte(i) || h.from != from) {
					t.Fatalf("step %d: held %v from %v, want the newest from %v", i, h.pkt[:2], h.from, from)
				}
				if st.held {
					pp.held.Store(nil) // as TakeHeld would; see TestTakeHeld
					if i+1 < len(tc.steps) && tc.steps[i+1].held && !tc.steps[i+1].queued {
						pp.held.Store(h) // still queued for the next step
					}
				}
			}
		})
	}
}

// TestTakeHeld: a held initiation is handed out once, and not when it is
// older than heldInitTTL.
func TestTakeHeld(t *testing.T) {
	b := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), key.PublicKey{1}, []byte("0123456789abcdef"),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	peer, from := key.PublicKey{2}, netip.MustParseAddrPort("127.0.0.1:1")
	b.SetPeer(peer, from)
	pp := b.peer(peer)
	init := make([]byte, wgInitiationLen)
	init[0] = wgInitiationType
	b.noteHandshake(pp, peer, init, from, time.Now().UnixNano())
	if pkt, at, ok := b.TakeHeld(peer); !ok || len(pkt) != wgInitiationLen || at != from {
		t.Fatalf("TakeHeld: %d bytes from %v, %v", len(pkt), at, ok)
	}
	if _, _, ok := b.TakeHeld(peer); ok {
		t.Fatal("handed out twice")
	}
	<-b.stale
	b.noteHandshake(pp, peer, init, from, time.Now().Add(-heldInitTTL).UnixNano())
	if _, _, ok := b.TakeHeld(peer); ok {
		t.Fatal("handed out a held initiation older than heldInitTTL")
	}
}

// TestProbeMakesWireGuardPeer: a fresh authentic ping from a peer that is
// not a WireGuard peer yet (it is dialling us) queues it for the tunnel to
// add, once; from a WireGuard peer, or replayed, it queues nothing.
func TestProbeMakesWireGuardPeer(t *testing.T) {
	ck := []byte("0123456789abcdef")
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	ka, kb := newKey(t), newKey(t)
	a := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), ka.Public(), ck, lg) // builds probes
	b := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), kb.Public(), ck, lg)
	a.SetPrivateKey(ka)
	b.SetPrivateKey(kb)
	from := netip.MustParseAddrPort("127.0.0.1:1")
	a.SetPeer(kb.Public(), from)
	b.SetPeer(ka.Public(), from)
	queued := func() bool {
		select {
		case got := <-b.stale:
			return got == ka.Public()
		default:
			return false
		}
	}
	ping := a.probe(probePing, kb.Public(), 1, 0)
	b.handleProbe(ping, from)
	if !queued() || !b.TakeWantWG(ka.Public()) {
		t.Fatal("a ping from a dialling peer did not queue it")
	}
	if b.TakeWantWG(ka.Public()) {
		t.Fatal("taken twice")
	}
	b.handleProbe(ping, from) // replayed
	if queued() || b.TakeWantWG(ka.Public()) {
		t.Fatal("a replayed ping queued the peer")
	}
	b.SetWG(ka.Public(), true)
	b.handleProbe(a.probe(probePing, kb.Public(), 2, 0), from)
	if queued() || b.TakeWantWG(ka.Public()) {
		t.Fatal("a ping from a WireGuard peer queued it")
	}
}
