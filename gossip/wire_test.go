package gossip

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{
		{},
		testMeta("a"),
		{Site: "v", Version: "v1.2.3+0123456789ab"},
		{Site: strings.Repeat("s", maxSiteLen), Version: strings.Repeat("v", maxVersionLen), Tunnel: netip.MustParseAddrPort("[fe80::1%eth0]:1"), Relay: netip.MustParseAddrPort("[::ffff:10.0.0.1]:2")},
	} {
		b, err := encodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > memberlist.MetaMaxSize {
			t.Fatalf("meta is %d bytes", len(b))
		}
		got, err := decodeMeta(append(b, 1, 2, 3)) // trailing fields are ignored
		if err != nil {
			t.Fatal(err)
		}
		want := m
		want.Tunnel = netip.AddrPortFrom(m.Tunnel.Addr().Unmap().WithZone(""), m.Tunnel.Port())
		want.Relay = netip.AddrPortFrom(m.Relay.Addr().Unmap().WithZone(""), m.Relay.Port())
		if !m.Tunnel.IsValid() {
			want.Tunnel = netip.AddrPort{}
		}
		if !m.Relay.IsValid() {
			want.Relay = netip.AddrPort{}
		}
		if got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	// A meta of an older node ends after the relay field: no version.
	old := Meta{Site: "s", Version: "v9"}
	b, _ := encodeMeta(old)
	if got, err := decodeMeta(b[:len(b)-3]); err != nil || got.Version != "" || got.Site != "s" {
		t.Fatalf("meta without the build field: %+v, %v", got, err)
	}
	if got, _ := decodeMeta(b); got.Version != "v9" {
		t.Fatalf("version %q, want v9", got.Version)
	}
	if b, _ := encodeMeta(Meta{Version: strings.Repeat("v", 300)}); len(b) > memberlist.MetaMaxSize {
		t.Fatalf("a long version makes a %d-byte meta", len(b))
	}
	if _, err := encodeMeta(Meta{Site: strings.Repeat("s", maxSiteLen+1)}); err == nil {
		t.Fatal("over-long site accepted")
	}
	good, _ := encodeMeta(testMeta("a"))
	for i := range len(good) - 1 {
		if _, err := decodeMeta(good[:i]); err == nil && i < 2+len("site-a")+32+1 {
			t.Fatalf("truncated meta (%d bytes) accepted", i)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := &record{name: "node-1", version: 1<<62 + 5, leaving: true, exports: []Export{
		{Name: "a", Weight: -3, Healthy: true}, {Name: "b", Weight: 1 << 30}, {Name: "c"},
	}}
	testSign(r)
	got, name, err := decodeRecordMsg(encodeRecordMsg(r))
	if err != nil || name != "node-1" {
		t.Fatal(name, err)
	}
	clamped := []Export{{Name: "a", Weight: 1, Healthy: true}, {Name: "b", Weight: MaxWeight}, {Name: "c", Weight: 1}}
	if got.name != r.name || got.version != r.version || !got.leaving || !slices.Equal(got.exports, clamped) ||
		got.meta != testMeta("node-1") || !got.signKey.Equal(r.signKey) || !got.verifySig() {
		t.Fatalf("got %+v", got)
	}

	state, dropped := encodeState(r, []*record{{name: "x", version: 1, exports: []Export{}}})
	recs, err := decodeState(state)
	if err != nil || dropped != 0 || len(recs) != 2 || recs[1].name != "x" || recs[1].exports == nil {
		t.Fatalf("state: %v %d %+v", err, dropped, recs)
	}

	// State size cap: records past it are left out, ours first.
	var many []*record
	bigExports := make([]Export, maxExports)
	for i := range bigExports {
		bigExports[i] = Export{Name: strings.Repeat("e", 50)}
	}
	for range 30 {
		many = append(many, &record{name: "n", version: 1, exports: bigExports})
	}
	state, dropped = encodeState(r, many)
	if len(state) > maxStateBytes || dropped == 0 {
		t.Fatalf("state %d bytes, %d dropped", len(state), dropped)
	}
	if recs, err := decodeState(state); err != nil || recs[0].name != "node-1" {
		t.Fatalf("capped state: %v", err)
	}
}

func TestSanitizeExports(t *testing.T) {
	in := []Export{{Name: ""}, {Name: strings.Repeat("x", maxNameLen+1)}, {Name: "ok", Weight: 1}}
	for i := range maxExports + 10 {
		in = append(in, Export{Name: strings.Repeat("y", 200) + string(rune('a'+i%26))})
	}
	out, dropped := sanitizeExports("me", in, 0)
	if dropped == 0 || out[0].Name != "ok" || len(out) > maxExports {
		t.Fatalf("kept %d, dropped %d", len(out), dropped)
	}
	if msg := encodeRecordMsg(testSign(&record{name: "me", version: 1 << 63, exports: out})); len(msg) > maxMessageBytes {
		t.Fatalf("sanitized record is %d bytes", len(msg))
	}
}

func TestMergeVersions(t *testing.T) {
	n := newNode(t, "me")
	g := n.Gossip
	d := &delegate{g: g}
	d.NotifyJoin(&memberlist.Node{Name: "p", Meta: mustMeta(t, testMeta("p"))})

	send := func(version uint64, exps ...Export) {
		d.NotifyMsg(encodeRecordMsg(testSign(&record{name: "p", version: version, exports: exps})))
	}
	exports := func() []Export { m, _ := n.member("p"); return m.Exports }

	if exports() != nil {
		t.Fatal("exports known before any record")
	}
	send(10, Export{Name: "v10"})
	send(9, Export{Name: "v9"})
	send(10, Export{Name: "v10bis"})
	if e := exports(); len(e) != 1 || e[0].Name != "v10" {
		t.Fatalf("after stale records: %v", e)
	}
	send(11)
	if e := exports(); e == nil || len(e) != 0 {
		t.Fatalf("after empty catalog: %#v", e)
	}

	// A record of our own name newer than ours: we bump past it.
	g.mu.Lock()
	v := g.version
	g.mu.Unlock()
	d.NotifyMsg(encodeRecordMsg(testSign(&record{name: "me", version: v + 100})))
	g.mu.Lock()
	if g.version <= v+100 {
		t.Fatalf("own version %d not bumped past %d", g.version, v+100)
	}
	g.mu.Unlock()

	// Leaving flag turns a dead member into a left one.
	d.NotifyLeave(&memberlist.Node{Name: "p"})
	if m, _ := n.member("p"); m.State != StateDead {
		t.Fatalf("state %v", m.State)
	}
	d.NotifyMsg(encodeRecordMsg(testSign(&record{name: "p", version: 12, leaving: true})))
	if m, _ := n.member("p"); m.State != StateLeft {
		t.Fatalf("state %v, want left", m.State)
	}
	// And back.
	d.NotifyJoin(&memberlist.Node{Name: "p", Meta: mustMeta(t, testMeta("p"))})
	if m, _ := n.member("p"); m.State != StateAlive {
		t.Fatalf("state %v, want alive", m.State)
	}
}

func mustMeta(t *testing.T, m Meta) []byte {
	b, err := encodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLimiter(t *testing.T) {
	l := newLimiter(30*time.Second, 3)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 0, true},
		{"a", time.Second, false},
		{"b", time.Second, true},
		{"c", 2 * time.Second, true},  // full: overflow key
		{"d", 3 * time.Second, false}, // overflow key used recently
		{"a", 29 * time.Second, false},
		{"a", 30 * time.Second, true},
		{"e", 40 * time.Second, true}, // expired keys make room
		{"f", 41 * time.Second, true}, // overflow again
		{"g", 42 * time.Second, false},
	}
	for i, s := range steps {
		if got := l.allow(s.key, t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d (%s at %v): %v, want %v", i, s.key, s.at, got, s.want)
		}
		if len(l.last) > 3 {
			t.Fatalf("step %d: %d keys", i, len(l.last))
		}
	}
}

func TestMemberlistLogLines(t *testing.T) {
	var buf logBuf
	var suspects []string
	w := &mlWriter{
		log:       slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		lim:       newLimiter(limitEvery, limitKeys),
		onSuspect: func(n string) { suspects = append(suspects, n) },
		now:       time.Now,
	}
	for _, line := range []string{
		// Verbatim formats from memberlist v0.7.0 net.go / state.go.
		"[ERR] memberlist: failed to receive: no installed keys could decrypt the message from=127.0.0.1:40000\n",
		"[ERR] memberlist: Decrypt packet failed: no installed keys could decrypt the message from=127.0.0.1:40001\n",
		"[ERR] memberlist: failed to receive: encryption is configured but remote state is not encrypted from=10.1.1.1:5\n",
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n",
		"[INFO] memberlist: Suspect node b has failed, no acks received\n",
		"[WARN] memberlist: Was able to connect to b over TCP but UDP probes failed, network may be misconfigured\n",
		"[ERR] memberlist: Push/Pull with b failed: no installed keys could decrypt the message\n",
	} {
		w.Write([]byte(line))
	}
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="gossip: rejected message from 127.0.0.1:40000: cannot decrypt (wrong cluster key?)"`,
		`level=WARN msg="gossip: rejected message from 10.1.1.1:5: not encrypted (peer has no cluster key?)"`,
		`level=DEBUG msg="memberlist: Stream connection from=127.0.0.1:1"`,
		`level=INFO msg="memberlist: Suspect node b has failed, no acks received"`,
		`level=WARN msg="gossip: UDP to b fails; membership kept by TCP pings`,
		`level=WARN msg="gossip: push/pull with b: reply cannot decrypt (wrong cluster key?)"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	if strings.Contains(out, "40001: cannot") || strings.Contains(out, "level=ERROR") {
		t.Errorf("second rejection from the same IP not rate-limited, or raw error kept:\n%s", out)
	}
	if !slices.Equal(suspects, []string{"node b"}) {
		t.Errorf("suspects = %q", suspects)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Name: "n", Key: testKey}
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no name", func(c *Config) { c.Name = "" }, "name is required"},
		{"no key", func(c *Config) { c.Key = nil }, "cluster key is required"},
		{"bad key", func(c *Config) { c.Key = []byte("short") }, "16, 24 or 32 bytes"},
		{"site", func(c *Config) { c.Meta.Site = strings.Repeat("s", 300) }, "longer than"},
		{"v6 any", func(c *Config) { c.Bind = netip.MustParseAddrPort("[::]:7946") }, "advertise"},
	} {
		c0 := ok
		c.mod(&c0)
		err := c0.Validate()
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

func FuzzDecodeRecordMsg(f *testing.F) {
	f.Add(encodeRecordMsg(testSign(&record{name: "a", version: 3, exports: []Export{{Name: "s", Weight: 2, Healthy: true}}})))
	f.Add([]byte{wireVersion, kindRecord, 0})
	signed := testSign(&record{name: "n", version: 9, exports: []Export{{Name: "e", Weight: 3, Healthy: true}}})
	signed.cert = []byte("certificate bytes")
	signRecord(signed, testMeta("n"), signed.cert, testSignKey("n"))
	f.Add(encodeRecordMsg(signed))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, _, err := decodeRecordMsg(b)
		if err != nil {
			return
		}
		_ = r.verifySig() // never panics, whatever the fields
		if r.signed != nil && !bytes.HasSuffix(r.raw, r.sig) {
			t.Fatalf("signature is not the record's last 64 bytes")
		}
		again, _, err := decodeRecordMsg(encodeRecordMsg(r))
		if err != nil || again.name != r.name || again.version != r.version || !slices.Equal(again.exports, r.exports) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	s, _ := encodeState(&record{name: "a", version: 1, exports: []Export{}}, []*record{{name: "b", version: 2, exports: []Export{{Name: "x"}}}})
	f.Add(s)
	f.Add([]byte{wireVersion, kindState, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeState(b)
	})
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := encodeMeta(Meta{Site: "s", Tunnel: netip.MustParseAddrPort("1.2.3.4:5")})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		e, err := encodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		if m2, err := decodeMeta(e); err != nil || m2 != m {
			t.Fatalf("round trip: %+v %+v %v", m, m2, err)
		}
	})
}
