package node

import (
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/tunnel"
)

func TestImportGateSteps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		ms   int
		done int // connections that end before this one arrives
		want string
	}
	for _, tc := range []struct {
		name  string
		cfg   config.Import
		steps []step
	}{
		{"unlimited", config.Import{}, []step{{0, 0, ""}, {0, 0, ""}, {0, 0, ""}}},
		{"max_conns 2", config.Import{MaxConns: 2}, []step{{0, 0, ""}, {0, 0, ""}, {0, 0, "max_conns (2) reached"}, {1, 1, ""}, {2, 0, "max_conns (2) reached"}}},
		{"rate 2 burst 2", config.Import{Rate: 2}, []step{{0, 0, ""}, {0, 0, ""}, {0, 0, "rate (2/s, burst 2) exceeded"}, {500, 0, ""}, {600, 0, "rate (2/s, burst 2) exceeded"}}},
		{"rate 1 burst 3, max_conns 2", config.Import{Rate: 1, Burst: 3, MaxConns: 2},
			// A connection refused by max_conns takes no token.
			[]step{{0, 0, ""}, {0, 0, ""}, {0, 0, "max_conns (2) reached"}, {0, 2, ""}, {0, 0, "rate (1/s, burst 3) exceeded"}, {1000, 0, ""}, {1000, 2, "rate (1/s, burst 3) exceeded"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newImportGate(tc.cfg)
			for i, s := range tc.steps {
				for range s.done {
					g.done()
				}
				c := tc.cfg
				if got := g.admit(&c, t0.Add(time.Duration(s.ms)*time.Millisecond)); got != s.want {
					t.Fatalf("step %d (t=%dms): %q, want %q", i, s.ms, got, s.want)
				}
			}
		})
	}
}

// TestImportGateReload: a reload's new rate applies to the next
// connection; open connections are not cut.
func TestImportGateReload(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := config.Import{Rate: 1, Burst: 1}
	g := newImportGate(c)
	if g.admit(&c, t0) != "" || g.admit(&c, t0) == "" {
		t.Fatal("rate 1 burst 1: want one admitted, one refused")
	}
	c = config.Import{} // reload: unlimited
	for i := range 10 {
		if why := g.admit(&c, t0); why != "" {
			t.Fatalf("after reload to unlimited, #%d refused: %s", i, why)
		}
	}
	c = config.Import{MaxConns: 5} // 11 open now
	if g.admit(&c, t0) == "" {
		t.Fatal("max_conns 5 with 11 open: admitted")
	}
	if g.open.Load() != 11 {
		t.Fatalf("%d open, want 11 (a reload cuts nothing)", g.open.Load())
	}
}

func TestCapPeers(t *testing.T) {
	cfg := &config.Config{Limits: config.Limits{MaxPeers: 3}}
	n := &Node{log: slog.New(slog.DiscardHandler), lim: newNodeLimits()}
	n.live.Store(cfg)
	mk := func(name string, st gossip.State) (gossip.Member, tunnel.Peer) {
		var pub key.PublicKey
		copy(pub[:], name)
		return gossip.Member{Name: name, State: st, Meta: gossip.Meta{PublicKey: pub}}, tunnel.Peer{PublicKey: pub}
	}
	names := func(ps []tunnel.Peer) string {
		s := ""
		for _, p := range ps {
			s += string(p.PublicKey[:1])
		}
		return s
	}
	type mem struct {
		name string
		st   gossip.State
	}
	for i, s := range []struct {
		members []mem
		want    string
		left    int64
	}{
		{[]mem{{"c", gossip.StateAlive}, {"d", gossip.StateAlive}}, "cd", 0},
		{[]mem{{"c", gossip.StateAlive}, {"d", gossip.StateAlive}, {"e", gossip.StateAlive}}, "cde", 0},
		// Newcomers "a" and "b" sort first by name but do not push out the
		// established c, d, e.
		{[]mem{{"a", gossip.StateAlive}, {"b", gossip.StateAlive}, {"c", gossip.StateAlive}, {"d", gossip.StateAlive}, {"e", gossip.StateAlive}}, "cde", 2},
		// d dies: an alive newcomer takes its place before it.
		{[]mem{{"a", gossip.StateAlive}, {"b", gossip.StateAlive}, {"c", gossip.StateAlive}, {"d", gossip.StateDead}, {"e", gossip.StateAlive}}, "cea", 2},
		{[]mem{{"a", gossip.StateAlive}}, "a", 0},
	} {
		var ms []gossip.Member
		var ps []tunnel.Peer
		for _, m := range s.members {
			gm, p := mk(m.name, m.st)
			ms, ps = append(ms, gm), append(ps, p)
		}
		got := n.capPeers(ps, ms)
		if names(got) != s.want || n.lim.peersLeftOut.Load() != s.left {
			t.Fatalf("step %d: peers %q (%d left out), want %q (%d)", i, names(got), n.lim.peersLeftOut.Load(), s.want, s.left)
		}
	}
}

// TestLimitsThroughMesh: two nodes in-process. An import's max_conns closes
// the connection beyond it at once and counts it; the exporter's
// max_streams_per_peer and an export's max_conns refuse streams beyond them;
// every count returns to zero when the connections end.
func TestLimitsThroughMesh(t *testing.T) {
	dir, err := os.MkdirTemp("", "meshd-limits")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	backend, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	ck := make([]byte, 32)
	rand.Read(ck)
	ec := testConfig(t, dir, "exp", "cloud", ck)
	ec.Limits.MaxStreamsPerPeer = 4
	ec.Exports = []config.Export{{Name: "a", Target: backend.Addr(), Weight: 1}, {Name: "b", Target: backend.Addr(), Weight: 1, MaxConns: 1},
		{Name: "c", Target: backend.Addr(), Weight: 1}}
	e, _ := New(ec, nil)
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ic := testConfig(t, dir, "imp", "onprem", ck)
	ic.Cluster.Join = []string{e.GossipAddr().String()}
	ic.Imports = []config.Import{
		{Name: "a", Listen: loop, Balance: config.BalanceLeastConn, MaxConns: 2},
		{Name: "c", Listen: loop, Balance: config.BalanceLeastConn}, // same backend, no client limit
		{Name: "b", Listen: loop, Balance: config.BalanceLeastConn, ConnectTimeout: time.Second},
	}
	i, _ := New(ic, nil)
	if err := i.Start(); err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	limitedImp, freeImp := i.importList()[0], i.importList()[1]
	bAddr := i.importList()[2].ln.Addr().String()

	// open dials an import and checks one echo round trip; nil on failure.
	open := func(addr string) net.Conn {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return nil
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			c.Close()
			return nil
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			return nil
		}
		c.SetDeadline(time.Time{})
		return c
	}
	testutil.Until(t, 15*time.Second, "import a to work", func() bool {
		c := open(limitedImp.ln.Addr().String())
		if c != nil {
			c.Close()
		}
		return c != nil
	})
	testutil.Until(t, 5*time.Second, "streams released", func() bool { return e.lim.streamsOf(i.tun.PublicKey()) == 0 })

	// Import max_conns 2: the third connection is closed at once.
	var held []net.Conn
	for range 2 {
		c := open(limitedImp.ln.Addr().String())
		if c == nil {
			t.Fatal("connection within max_conns failed")
		}
		held = append(held, c)
	}
	c, err := net.Dial("tcp", limitedImp.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err == nil || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("connection beyond max_conns: read %v after %v, want closed at once", err, time.Since(start))
	}
	c.Close()
	if got := limitedImp.gate.limited.Load(); got != 1 {
		t.Fatalf("limited = %d, want 1", got)
	}
	if s := i.metricsSample(); s.Imports[0].Limited != 1 {
		t.Fatalf("metrics sample: limited %d, want 1", s.Imports[0].Limited)
	}

	// max_streams_per_peer 4 on the exporter: 2 held plus 2 more; the 5th
	// stream is refused and its client connection fails.
	for range 2 {
		c := open(freeImp.ln.Addr().String())
		if c == nil {
			t.Fatal("stream within max_streams_per_peer failed")
		}
		held = append(held, c)
	}
	if got := e.lim.streamsOf(i.tun.PublicKey()); got != 4 {
		t.Fatalf("exporter counts %d streams of the importer, want 4", got)
	}
	if c := open(freeImp.ln.Addr().String()); c != nil {
		c.Close()
		t.Fatal("5th stream admitted with max_streams_per_peer 4")
	}
	if e.lim.streamsRefused.Load() == 0 {
		t.Fatal("refused stream not counted")
	}
	if l := e.metricsSample().Limits; l.StreamsRefused != e.lim.streamsRefused.Load() {
		t.Fatalf("metrics sample: %d streams refused, want %d", l.StreamsRefused, e.lim.streamsRefused.Load())
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	testutil.Until(t, 5*time.Second, "streams released", func() bool { return e.lim.streamsOf(i.tun.PublicKey()) == 0 })

	// The importer closes its refused streams at once: none lingers.
	testutil.Until(t, 5*time.Second, "refused streams closed", func() bool {
		e.lim.mu.Lock()
		defer e.lim.mu.Unlock()
		return e.lim.lingering[i.tun.PublicKey()] == 0
	})

	// A peer that leaves its refused streams open (as if it had lingerMax of
	// them) has its session reset at the next refusal: the held streams
	// end, and the mesh recovers.
	for range 4 {
		c := open(freeImp.ln.Addr().String())
		if c == nil {
			t.Fatal("stream within max_streams_per_peer failed")
		}
		held = append(held, c)
	}
	e.lim.mu.Lock()
	e.lim.lingering[i.tun.PublicKey()] = lingerMax(4)
	e.lim.mu.Unlock()
	if c := open(freeImp.ln.Addr().String()); c != nil {
		c.Close()
	}
	testutil.Until(t, 5*time.Second, "the session reset", func() bool { return e.lim.sessionsReset.Load() > 0 })
	if l := e.metricsSample().Limits; l.SessionsReset == 0 {
		t.Fatal("metrics sample: the session reset not counted")
	}
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("a stream of the reset session is still open: %v", err)
		}
		c.Close()
	}
	held = nil
	e.lim.mu.Lock()
	delete(e.lim.lingering, i.tun.PublicKey())
	e.lim.mu.Unlock()
	testutil.Until(t, 10*time.Second, "the mesh to recover", func() bool {
		c := open(freeImp.ln.Addr().String())
		if c != nil {
			c.Close()
		}
		return c != nil
	})
	testutil.Until(t, 5*time.Second, "streams released", func() bool { return e.lim.streamsOf(i.tun.PublicKey()) == 0 })

	// Export b has max_conns 1.
	c1 := open(bAddr)
	if c1 == nil {
		t.Fatal("first connection to export b failed")
	}
	if c := open(bAddr); c != nil {
		c.Close()
		t.Fatal("second connection to export b (max_conns 1) admitted")
	}
	if e.lim.exportRefused.Load() == 0 {
		t.Fatal("export max_conns refusal not counted")
	}
	if l := e.metricsSample().Limits; l.ExportRefused == 0 {
		t.Fatal("metrics sample: export max_conns refusal not counted")
	}
	c1.Close()
	testutil.Until(t, 5*time.Second, "export slot released", func() bool { return e.exportMap()["b"].slots.Load() == 0 })
	// (The refusals opened the importer's breaker for b: allow its retry.)
	testutil.Until(t, 10*time.Second, "export b to serve again after its connection ended", func() bool {
		c := open(bAddr)
		if c != nil {
			c.Close()
		}
		return c != nil
	})
}

func TestLingerCount(t *testing.T) {
	l := newNodeLimits()
	p, q := key.PublicKey{1}, key.PublicKey{2}
	for i := range 3 {
		if !l.lingerBegin(p, 3) {
			t.Fatalf("refused stream %d of 3 not counted", i)
		}
	}
	if l.lingerBegin(p, 3) {
		t.Fatal("a 4th lingering refused stream allowed with max 3")
	}
	if !l.lingerBegin(q, 3) {
		t.Fatal("another peer counted with the first")
	}
	l.lingerEnd(p)
	if !l.lingerBegin(p, 3) {
		t.Fatal("a closed refused stream did not free its place")
	}
	for range 3 {
		l.lingerEnd(p)
	}
	l.lingerEnd(q)
	if len(l.lingering) != 0 {
		t.Fatalf("entries left: %v", l.lingering)
	}
	if lingerMax(4) != lingerMin || lingerMax(4096) != 4096 {
		t.Fatalf("lingerMax: %d, %d", lingerMax(4), lingerMax(4096))
	}
}

// TestLimitsReload: a reload changes an import's max_conns and rate for the
// next connections; connections already open stay.
func TestLimitsReload(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "n1", "s1", make([]byte, 32))
	cfg.Imports = []config.Import{{Name: "svc", Listen: freeAddr(t), Balance: config.BalanceLeastConn, MaxConns: 1,
		ConnectTimeout: 10 * time.Second}}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	addr := n.importList()[0].ln.Addr().String()
	// No node exports svc: an admitted connection waits (connect_timeout),
	// a refused one is closed at once.
	closedAtOnce := func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		return err != nil && !isTimeout(err)
	}
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	testutil.Until(t, 2*time.Second, "the first connection to count", func() bool { return n.importList()[0].gate.open.Load() == 1 })
	if !closedAtOnce() {
		t.Fatal("second connection with max_conns 1 not closed at once")
	}
	next := clone(cfg)
	next.Imports[0].MaxConns = 0
	next.Imports[0].Rate, next.Imports[0].Burst = 1, 1
	if err := n.Reload(next); err != nil {
		t.Fatal(err)
	}
	if closedAtOnce() {
		t.Fatal("after reload to max_conns 0, rate 1: the next connection was refused")
	}
	if !closedAtOnce() {
		t.Fatal("after reload to rate 1 burst 1: a second connection within the second was admitted")
	}
	if n.importList()[0].gate.open.Load() < 1 {
		t.Fatal("the reload cut the connection that was open")
	}
}

// TestMaxPeersWithholdsTunnelState: a node with limits.max_peers 1 in a
// mesh of three gives tunnel state to one peer only (the one it had first),
// counts the other as left out, and takes it in once the limit is raised
// by a reload.
func TestMaxPeersWithholdsTunnelState(t *testing.T) {
	dir := t.TempDir()
	ck := make([]byte, 32)
	rand.Read(ck)
	ac := testConfig(t, dir, "a", "s1", ck)
	ac.Limits.MaxPeers = 1
	a, err := New(ac, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	start := func(name string) *Node {
		c := testConfig(t, dir, name, "s2", ck)
		c.Cluster.Join = []string{a.GossipAddr().String()}
		n, err := New(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	b := start("b")
	testutil.Until(t, 10*time.Second, "a to give b tunnel state", func() bool {
		_, ok := a.tun.AllSessionStats()[b.tun.PublicKey()]
		return ok
	})
	c := start("c")
	testutil.Until(t, 10*time.Second, "a to count c left out", func() bool {
		return a.metricsSample().Limits.PeersLeftOut == 1
	})
	peers := a.tun.AllSessionStats()
	if _, ok := peers[b.tun.PublicKey()]; len(peers) != 1 || !ok {
		t.Fatalf("a holds tunnel state for %d peers (b among them: %v), want b only", len(peers), ok)
	}
	next := clone(ac)
	next.Limits.MaxPeers = 0 // the default
	if err := a.Reload(next); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 10*time.Second, "a to give c tunnel state after the reload", func() bool {
		_, ok := a.tun.AllSessionStats()[c.tun.PublicKey()]
		return ok && a.metricsSample().Limits.PeersLeftOut == 0
	})
}
