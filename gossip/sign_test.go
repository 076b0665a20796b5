package gossip

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestSignedRecordSteps: which records replace what a node holds for a
// peer (README "Identity and policy" without pki: signed by the node, first key holds until the
// node leaves, versions never wrap, weights clamped).
func TestSignedRecordSteps(t *testing.T) {
	n := newNode(t, "me")
	g := n.Gossip
	d := &delegate{g: g}
	// memberlist's (unsigned) meta for p says another WireGuard key and site.
	lying := testMeta("p")
	lying.Site, lying.PublicKey = "evil", testMeta("x").PublicKey
	d.NotifyJoin(&memberlist.Node{Name: "p", Meta: mustMeta(t, lying)})
	_, intruder, _ := ed25519.GenerateKey(nil)

	signedBy := func(k ed25519.PrivateKey, r *record) []byte {
		if r.exports == nil {
			r.exports = []Export{}
		}
		signRecord(r, testMeta(r.name), nil, k)
		return encodeRecordMsg(r)
	}
	exports := func() []Export { m, _ := n.member("p"); return m.Exports }
	ownVersion := func() uint64 { g.mu.Lock(); defer g.mu.Unlock(); return g.version }
	tampered := signedBy(testSignKey("p"), &record{name: "p", version: 50, exports: []Export{{Name: "t", Weight: 1}}})
	tampered[len(tampered)-70] ^= 1 // inside the signed part

	steps := []struct {
		what string
		msg  []byte
		want string // first export name of p afterwards ("" none)
	}{
		{"unsigned record", encodeRecordMsg(&record{name: "p", version: 5, exports: []Export{{Name: "unsigned"}}}), ""},
		{"first signed record", signedBy(testSignKey("p"), &record{name: "p", version: 10, exports: []Export{{Name: "v10", Weight: 1 << 30}}}), "v10"},
		{"another key, newer version", signedBy(intruder, &record{name: "p", version: math.MaxUint64, exports: []Export{{Name: "forged"}}}), "v10"},
		{"tampered", tampered, "v10"},
		{"p's key, newer", signedBy(testSignKey("p"), &record{name: "p", version: 11, exports: []Export{{Name: "v11"}}}), "v11"},
		{"p's key, older", signedBy(testSignKey("p"), &record{name: "p", version: 9, exports: []Export{{Name: "v9"}}}), "v11"},
	}
	for _, s := range steps {
		d.NotifyMsg(s.msg)
		got := ""
		if e := exports(); len(e) > 0 {
			got = e[0].Name
		}
		if got != s.want {
			t.Fatalf("after %s: p exports %v, want first %q", s.what, exports(), s.want)
		}
	}
	m, _ := n.member("p")
	if !m.Signed || m.Meta != testMeta("p") {
		t.Fatalf("meta of p = %+v (signed %v), want the signed record's %+v", m.Meta, m.Signed, testMeta("p"))
	}
	if got := n.logs.lines(`gossip: dropped a record" node=p`); len(got) != 1 {
		t.Fatalf("%d log lines about p's dropped records, want 1 (rate-limited): %v", len(got), got)
	}
	// Weights are clamped.
	d.NotifyMsg(signedBy(testSignKey("p"), &record{name: "p", version: 12, exports: []Export{{Name: "w", Weight: 1 << 30}, {Name: "z", Weight: -5}}}))
	if e := exports(); !slices.Equal(e, []Export{{Name: "w", Weight: MaxWeight}, {Name: "z", Weight: 1}}) {
		t.Fatalf("weights not clamped: %v", e)
	}

	// Our own name: a forgery does not move our version; our own key's
	// record at the top does, without wrapping.
	v := ownVersion()
	d.NotifyMsg(signedBy(intruder, &record{name: "me", version: math.MaxUint64 - 1}))
	if ownVersion() != v {
		t.Fatalf("a forged record of ours moved our version %d -> %d", v, ownVersion())
	}
	d.NotifyMsg(signedBy(testSignKey("me"), &record{name: "me", version: math.MaxUint64}))
	if ownVersion() != math.MaxUint64 {
		t.Fatalf("version %d, want saturated", ownVersion())
	}
	g.SetExports([]Export{{Name: "x", Weight: 1}})
	if ownVersion() != math.MaxUint64 {
		t.Fatalf("version wrapped to %d", ownVersion())
	}

	// Once p has left, a new key may take the name.
	d.NotifyMsg(signedBy(testSignKey("p"), &record{name: "p", version: 13, leaving: true}))
	d.NotifyLeave(&memberlist.Node{Name: "p"})
	d.NotifyMsg(signedBy(intruder, &record{name: "p", version: 1, exports: []Export{{Name: "new-p"}}}))
	if e := exports(); len(e) != 1 || e[0].Name != "new-p" {
		t.Fatalf("after p left, a new key's record: %v", e)
	}
}

// TestIdentityHook: with an Identity check (pki), a record is stored only
// if the check accepts it, and a certified key change is allowed.
func TestIdentityHook(t *testing.T) {
	_, other, _ := ed25519.GenerateKey(nil)
	n := newNode(t, "me", func(c *Config, _ *testNode) {
		c.Identity = func(name string, m Meta, cert []byte, sk ed25519.PublicKey) error {
			if string(cert) != "good:"+name {
				return errors.New("bad certificate")
			}
			return nil
		}
	})
	d := &delegate{g: n.Gossip}
	d.NotifyJoin(&memberlist.Node{Name: "p", Meta: mustMeta(t, testMeta("p"))})
	send := func(k ed25519.PrivateKey, v uint64, cert, exp string) {
		r := &record{name: "p", version: v, exports: []Export{{Name: exp, Weight: 1}}}
		signRecord(r, testMeta("p"), []byte(cert), k)
		d.NotifyMsg(encodeRecordMsg(r))
	}
	first := func() string {
		m, _ := n.member("p")
		if len(m.Exports) == 0 {
			return ""
		}
		return m.Exports[0].Name
	}
	send(testSignKey("p"), 10, "bad", "a")
	if first() != "" {
		t.Fatal("record with a refused certificate stored")
	}
	send(testSignKey("p"), 11, "good:p", "b")
	if first() != "b" {
		t.Fatalf("record with a good certificate not stored: %q", first())
	}
	send(other, 12, "good:p", "c") // re-issued certificate with new keys
	if m, _ := n.member("p"); first() != "c" || string(m.Cert) != "good:p" {
		t.Fatalf("certified key change refused: %q", first())
	}
	send(testSignKey("p"), 11, "good:p", "old") // replay of the old key's record
	if first() != "c" {
		t.Fatalf("replayed record won: %q", first())
	}
}

// TestSignedRecordsSpread: real nodes sign what they gossip; members see
// the signed meta and the certificate carried.
func TestSignedRecordsSpread(t *testing.T) {
	a := newNode(t, "a", func(c *Config, _ *testNode) { c.Cert = []byte("cert-of-a") })
	b := newNode(t, "b")
	b.join(t, a)
	a.SetExports([]Export{{Name: "svc", Weight: 2, Healthy: true}})
	waitFor(t, 5*time.Second, "a's record at b", func() string {
		m, _ := b.member("a")
		if !m.Signed || string(m.Cert) != "cert-of-a" || len(m.Exports) != 1 {
			return "not yet"
		}
		return ""
	})
	if err := a.SetCert([]byte("renewed")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "renewed cert at b", func() string {
		if m, _ := b.member("a"); string(m.Cert) != "renewed" {
			return string(m.Cert)
		}
		return ""
	})
}

// TestKeyRotation: the three steps of a cluster key rotation, one node at
// a time, with a node that never changes in the middle: every step keeps
// the members talking.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey := testKey, []byte("fedcba9876543210fedcba9876543210")
	a := newNode(t, "a")
	b := newNode(t, "b")
	b.join(t, a)
	waitState(t, 5*time.Second, "b", StateAlive, a)
	steps := [][][]byte{
		{oldKey, newKey}, // 1: everyone can read the new key
		{newKey, oldKey}, // 2: everyone writes with it
		{newKey},         // 3: the old key is gone
	}
	for i, keys := range steps {
		for _, n := range []*testNode{a, b} {
			if err := n.SetKeys(keys); err != nil {
				t.Fatalf("step %d: %s: %v", i+1, n.name, err)
			}
		}
		a.SetExports([]Export{{Name: fmt.Sprintf("step-%d", i+1), Weight: 1}})
		waitFor(t, 5*time.Second, fmt.Sprintf("step %d catalog", i+1), func() string {
			m, _ := b.member("a")
			if m.State != StateAlive || len(m.Exports) != 1 || m.Exports[0].Name != fmt.Sprintf("step-%d", i+1) {
				return fmt.Sprintf("%+v", m)
			}
			return ""
		})
	}
	// A node with only the old key cannot join any more.
	c := newNode(t, "c")
	if _, err := c.Join([]string{a.LocalAddr().String()}); err == nil {
		t.Fatal("a node with the retired key joined")
	}
	if err := a.SetKeys([][]byte{[]byte("short")}); err == nil {
		t.Fatal("a 5-byte key accepted")
	}
}
