package gossip

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/testutil"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
)

// logBuf is a goroutine-safe buffer for captured slog output.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the captured lines containing s.
func (l *logBuf) lines(s string) []string {
	var out []string
	for line := range strings.SplitSeq(l.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

func testMeta(name string) Meta {
	var pk key.PublicKey
	copy(pk[:], name)
	return Meta{
		Site:      "site-" + name,
		PublicKey: pk,
		Tunnel:    netip.MustParseAddrPort("127.0.0.1:51820"),
		Relay:     netip.MustParseAddrPort("[::1]:7947"),
	}
}

type testNode struct {
	*Gossip
	logs *logBuf
	tr   *filterTransport // nil unless withPartition
}

type option func(*Config, *testNode)

func withKey(k []byte) option { return func(c *Config, _ *testNode) { c.Key = k } }

func newNode(t *testing.T, name string, opts ...option) *testNode {
	t.Helper()
	n := &testNode{logs: &logBuf{}}
	cfg := Config{
		Name:              name,
		Bind:              netip.MustParseAddrPort("127.0.0.1:0"),
		Key:               testKey,
		Meta:              testMeta(name),
		SignKey:           testSignKey(name),
		Logger:            slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ReconnectInterval: 300 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg, n)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	n.Gossip = g
	t.Cleanup(func() {
		g.Close()
		if t.Failed() {
			t.Logf("logs of %s:\n%s", name, n.logs.String())
		}
	})
	return n
}

func (n *testNode) join(t *testing.T, to *testNode) {
	t.Helper()
	k, err := n.Join([]string{to.LocalAddr().String()})
	if err != nil || k != 1 {
		t.Fatalf("%s join %s: %d, %v", n.name, to.name, k, err)
	}
}

func (n *testNode) member(name string) (Member, bool) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// waitFor polls cond until it returns "" or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, func() (bool, string) { msg := cond(); return msg == "", msg })
}

// waitState waits until every observer sees name in state st.
func waitState(t *testing.T, timeout time.Duration, name string, st State, observers ...*testNode) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%s %s", name, st), func() string {
		for _, o := range observers {
			m, ok := o.member(name)
			if !ok {
				return fmt.Sprintf("%s does not know %s", o.name, name)
			}
			if m.State != st {
				return fmt.Sprintf("%s sees %s %s", o.name, name, m.State)
			}
		}
		return ""
	})
}

func cluster(t *testing.T, names ...string) []*testNode {
	t.Helper()
	nodes := make([]*testNode, len(names))
	for i, name := range names {
		nodes[i] = newNode(t, name)
		if i > 0 {
			nodes[i].join(t, nodes[0])
		}
	}
	return nodes
}

func TestThreeNodesJoin(t *testing.T) {
	nodes := cluster(t, "a", "b", "c")
	for _, n := range nodes {
		if n.LocalAddr().Port() == 0 || n.LocalAddr().Addr() != netip.MustParseAddr("127.0.0.1") {
			t.Fatalf("LocalAddr = %v", n.LocalAddr())
		}
		if l := n.Local(); l.Name != n.name || l.State != StateAlive || l.Meta != testMeta(n.name) || l.Addr != n.LocalAddr() {
			t.Fatalf("Local() = %+v", l)
		}
	}
	waitFor(t, 5*time.Second, "full mesh", func() string {
		for _, n := range nodes {
			ms := n.Members()
			if len(ms) != 2 {
				return fmt.Sprintf("%s sees %d members", n.name, len(ms))
			}
			for _, o := range nodes {
				if o == n {
					continue
				}
				m, _ := n.member(o.name)
				if m.State != StateAlive || m.Meta != testMeta(o.name) || m.Addr != o.LocalAddr() {
					return fmt.Sprintf("%s sees %+v", n.name, m)
				}
			}
		}
		return ""
	})
	for _, n := range nodes {
		select {
		case <-n.Changes():
		default:
			t.Fatalf("%s: Changes() did not fire", n.name)
		}
		if ms := n.Members(); !slices.IsSortedFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatalf("Members not sorted: %v", ms)
		}
	}
}

func TestExportsSpread(t *testing.T) {
	nodes := cluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	waitState(t, 5*time.Second, "a", StateAlive, b, c)

	hasExports := func(want []Export, observers ...*testNode) func() string {
		return func() string {
			for _, o := range observers {
				m, _ := o.member("a")
				if !slices.Equal(m.Exports, want) {
					return fmt.Sprintf("%s sees a's exports %v", o.name, m.Exports)
				}
			}
			return ""
		}
	}
	first := []Export{{Name: "postgres", Weight: 1, Healthy: true}, {Name: "redis", Weight: 3}}
	a.SetExports(first)
	waitFor(t, 5*time.Second, "first catalog", hasExports(first, b, c))
	if got := a.Local().Exports; !slices.Equal(got, first) {
		t.Fatalf("Local().Exports = %v", got)
	}

	second := []Export{{Name: "postgres", Weight: 2, Healthy: false}}
	a.SetExports(second)
	waitFor(t, 5*time.Second, "second catalog", hasExports(second, b, c))

	// Too big for one UDP packet: goes by TCP.
	var big []Export
	for i := range 100 {
		big = append(big, Export{Name: fmt.Sprintf("service-with-a-long-name-%03d", i), Weight: i + 1, Healthy: i%2 == 0})
	}
	a.SetExports(big)
	waitFor(t, 5*time.Second, "big catalog", hasExports(big, b, c))

	c.SetExports([]Export{{Name: "web", Weight: 1, Healthy: true}})
	waitFor(t, 5*time.Second, "c's catalog at b", func() string {
		if m, _ := b.member("c"); len(m.Exports) != 1 {
			return fmt.Sprintf("%v", m.Exports)
		}
		return ""
	})

	// A late joiner has the whole catalog as soon as Join returns (push/pull).
	d := newNode(t, "d")
	d.join(t, b)
	ma, _ := d.member("a")
	mc, _ := d.member("c")
	if !slices.Equal(ma.Exports, big) || len(mc.Exports) != 1 || mc.Exports[0].Name != "web" {
		t.Fatalf("late joiner: a=%v c=%v", ma.Exports, mc.Exports)
	}
	// Members returns copies.
	ma.Exports[0].Name = "changed"
	if m, _ := d.member("a"); m.Exports[0].Name == "changed" {
		t.Fatal("Members shares its exports slice")
	}
}

func TestLeave(t *testing.T) {
	nodes := cluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	c.SetExports([]Export{{Name: "x", Weight: 1, Healthy: true}})
	waitFor(t, 5*time.Second, "c's catalog", func() string {
		for _, o := range []*testNode{a, b} {
			if m, _ := o.member("c"); len(m.Exports) != 1 || m.State != StateAlive {
				return fmt.Sprintf("%s sees %+v", o.name, m)
			}
		}
		return ""
	})
	start := time.Now()
	if err := c.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if c.Local().State != StateLeft {
		t.Fatalf("Local().State = %v after Leave", c.Local().State)
	}
	waitState(t, 5*time.Second, "c", StateLeft, a, b)
	t.Logf("left seen after %v", time.Since(start))
	if m, _ := a.member("c"); len(m.Exports) != 0 || m.Since.Before(start) {
		t.Fatalf("left member: %+v", m)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := c.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Leave after Close: %v", err)
	}
}

func TestCrashSuspectThenDead(t *testing.T) {
	nodes := cluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	waitState(t, 5*time.Second, "c", StateAlive, a, b)

	c.Close() // no Leave: a crash as far as the others can tell
	seen := map[string][]State{}
	waitFor(t, 10*time.Second, "c dead", func() string {
		done := true
		for _, o := range []*testNode{a, b} {
			m, _ := o.member("c")
			h := seen[o.name]
			if len(h) == 0 || h[len(h)-1] != m.State {
				seen[o.name] = append(h, m.State)
			}
			done = done && m.State == StateDead
		}
		if !done {
			return fmt.Sprint(seen)
		}
		return ""
	})
	for _, o := range []string{"a", "b"} {
		if !slices.Equal(seen[o], []State{StateAlive, StateSuspect, StateDead}) {
			t.Errorf("%s saw c go %v, want alive, suspect, dead", o, seen[o])
		}
	}
}

func TestWrongKeyRejected(t *testing.T) {
	good := newNode(t, "good")
	bad := newNode(t, "bad", withKey(otherKey))

	for range 2 {
		_, err := bad.Join([]string{good.LocalAddr().String()})
		if err == nil {
			t.Fatal("join with another cluster key succeeded")
		}
		want := "gossip: join " + good.LocalAddr().String() + ": refused or unreadable — cluster key mismatch?"
		if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("join error = %q, want prefix %q on one line", err, want)
		}
	}
	waitFor(t, 2*time.Second, "rejection logged", func() string {
		if len(good.logs.lines("gossip: rejected message from 127.0.0.1:")) == 0 {
			return good.logs.String()
		}
		return ""
	})
	lines := good.logs.lines("rejected message")
	if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "cannot decrypt (wrong cluster key?)") {
		t.Fatalf("want one WARN rejection line, got %q", lines)
	}
	if errs := good.logs.lines("level=ERROR"); len(errs) != 0 {
		t.Fatalf("unexpected error lines: %q", errs)
	}
	if len(good.Members()) != 0 || len(bad.Members()) != 0 {
		t.Fatalf("members: good %v, bad %v", good.Members(), bad.Members())
	}
}

func TestJoinUnreachable(t *testing.T) {
	n := newNode(t, "lonely")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = n.Join([]string{addr})
	if err == nil || strings.Contains(err.Error(), "key mismatch") || !strings.Contains(err.Error(), "gossip: join "+addr+": ") {
		t.Fatalf("join error = %v", err)
	}
}

func TestMalformedInputIgnored(t *testing.T) {
	n := newNode(t, "n")
	d := &delegate{g: n.Gossip}
	valid := encodeRecordMsg(testSign(&record{name: "peer", version: 7, exports: []Export{{Name: "s", Weight: 1}}}))
	tooMany := appendRecord([]byte{wireVersion, kindRecord}, &record{name: "peer", version: 8, exports: make([]Export, maxExports+1)})
	inputs := [][]byte{
		nil,
		{1},
		{9, kindRecord},
		{wireVersion, 9},
		{wireVersion, kindRecord},
		{wireVersion, kindRecord, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{wireVersion, kindState, 0xff, 0xff, 0xff, 0x0f},
		{wireVersion, kindState, 2, 1, 0},
		valid[:len(valid)-1],
		append(slices.Clone(valid), make([]byte, maxMessageBytes)...),
		tooMany,
	}
	for _, in := range inputs {
		d.NotifyMsg(in)
		d.MergeRemoteState(in, false)
		d.MergeRemoteState(in, true)
	}
	n.mu.Lock()
	cat := len(n.catalog)
	n.mu.Unlock()
	if cat != 0 || len(n.Members()) != 0 {
		t.Fatalf("malformed input was stored: catalog %d, members %v", cat, n.Members())
	}
	if got := len(n.logs.lines("ignored malformed catalog")); got < 1 || got > 3 {
		t.Fatalf("%d malformed-input log lines, want a few (rate-limited)", got)
	}
}

func TestBadMetaListedOnce(t *testing.T) {
	n := newNode(t, "n")
	d := &delegate{g: n.Gossip}
	node := &memberlist.Node{Name: "weird", Addr: net.IPv4(127, 0, 0, 9), Port: 7946, Meta: []byte{42, 1, 2}}
	d.NotifyJoin(node)
	d.NotifyUpdate(node)
	m, ok := n.member("weird")
	if !ok || m.Meta != (Meta{}) || m.State != StateAlive || m.Addr != netip.MustParseAddrPort("127.0.0.9:7946") {
		t.Fatalf("member = %+v, %v", m, ok)
	}
	if got := len(n.logs.lines("unreadable meta")); got != 1 {
		t.Fatalf("%d unreadable-meta warnings, want 1", got)
	}
}

func TestRetainGone(t *testing.T) {
	a := newNode(t, "a", func(c *Config, _ *testNode) { c.RetainGone = 300 * time.Millisecond })
	b := newNode(t, "b")
	b.join(t, a)
	b.SetExports([]Export{{Name: "s", Weight: 1, Healthy: true}})
	waitFor(t, 5*time.Second, "b's catalog", func() string {
		if m, _ := a.member("b"); len(m.Exports) != 1 {
			return fmt.Sprint(m)
		}
		return ""
	})
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.Close()
	waitFor(t, 5*time.Second, "b forgotten", func() string {
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.peers) != 0 || len(a.catalog) != 0 {
			return fmt.Sprintf("%d peers, %d records", len(a.peers), len(a.catalog))
		}
		return ""
	})
}

func TestNoGoroutineLeak(t *testing.T) {
	base := testutil.Snapshot()
	func() {
		nodes := make([]*Gossip, 3)
		for i := range nodes {
			g, err := New(Config{
				Name:   fmt.Sprintf("n%d", i),
				Bind:   netip.MustParseAddrPort("127.0.0.1:0"),
				Key:    testKey,
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			nodes[i] = g
			if i > 0 {
				if _, err := g.Join([]string{nodes[0].LocalAddr().String()}); err != nil {
					t.Fatal(err)
				}
			}
			g.SetExports([]Export{{Name: "s", Weight: 1, Healthy: true}})
		}
		if err := nodes[2].Leave(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		for _, g := range nodes {
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}()
	base.Check(t, 5*time.Second, 0)
}

func TestSendToUserMessage(t *testing.T) {
	nodes := cluster(t, "ua", "ub")
	a, b := nodes[0], nodes[1]
	if err := b.SendTo("ua", []byte("drill order")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-a.Messages():
		if string(m) != "drill order" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message not delivered")
	}
	if err := b.SendTo("nobody", []byte("x")); !errors.Is(err, ErrNoMember) {
		t.Fatalf("unknown member: %v", err)
	}
}

// testSignKey is the deterministic signing key newNode gives the node name.
func testSignKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("test-sign-key:" + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// testSign signs r as the node it names would (meta testMeta(name)).
func testSign(r *record) *record {
	if r.exports == nil {
		r.exports = []Export{}
	}
	signRecord(r, testMeta(r.name), nil, testSignKey(r.name))
	return r
}

// TestJoinErrorText: a hang-up may be another cluster key or a guard at
// its stream cap, and the message names both; an undecryptable reply is
// the key, and anything else is passed on as it is.
func TestJoinErrorText(t *testing.T) {
	for _, tc := range []struct {
		cause       string
		key, limits bool
	}{
		{"read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", true, true},
		{"EOF", true, true},
		{decryptFailures[0], true, false},
		{"dial tcp 127.0.0.1:2: connect: connection refused", false, false},
	} {
		got := joinError("127.0.0.1:2", errors.New(tc.cause))
		if strings.Contains(got, "cluster key mismatch?") != tc.key || strings.Contains(got, "stream limit") != tc.limits ||
			!strings.Contains(got, tc.cause) || strings.Contains(got, "\n") {
			t.Errorf("joinError(%q) = %q; want key hint %v, limit hint %v, the cause, one line", tc.cause, got, tc.key, tc.limits)
		}
	}
}
