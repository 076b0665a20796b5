package node

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/cert"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/key"
)

// pkiFixture is a CA, an identity for the node under test, and a way to
// make members with certificates.
type pkiFixture struct {
	t  *testing.T
	ca *cert.CA
	n  *Node
}

func newPKIFixture(t *testing.T) *pkiFixture {
	t.Helper()
	now := time.Now()
	ca, err := cert.NewCA("ca", now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &pkiFixture{t: t, ca: ca}
	own, nk := f.issue(cert.Template{Name: "self", Site: "s"}, now)
	pool, err := cert.NewPool([]*cert.Certificate{ca.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	set, err := cert.NewBundle(pool, own, nk, "self", "s", now)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Name: "self", Site: "s", PKI: config.PKI{Set: set}, Cluster: config.Cluster{Key: make([]byte, 32)}}
	n := &Node{cfg: cfg, log: slog.New(slog.DiscardHandler), lim: newNodeLimits()}
	n.live.Store(cfg)
	n.exports.Store(&map[string]*exporter{})
	n.pki.Store(set)
	f.n = n
	return f
}

func (f *pkiFixture) issue(t cert.Template, now time.Time) (*cert.Certificate, cert.NodeKey) {
	f.t.Helper()
	nk, err := cert.NewNodeKey()
	if err != nil {
		f.t.Fatal(err)
	}
	if t.NotBefore.IsZero() {
		t.NotBefore, t.NotAfter = now.Add(-time.Minute), now.Add(time.Hour)
	}
	c, err := f.ca.Sign(t, nk)
	if err != nil {
		f.t.Fatal(err)
	}
	return c, nk
}

// member is a signed gossip member holding c, claiming site and wg.
func member(name, site string, wg key.PublicKey, c *cert.Certificate, sk ed25519.PrivateKey, exports ...string) gossip.Member {
	m := gossip.Member{Name: name, State: gossip.StateAlive, Signed: true,
		Meta: gossip.Meta{Site: site, PublicKey: wg}}
	if c != nil {
		m.Cert = c.Raw()
	}
	if sk != nil {
		m.SignKey = sk.Public().(ed25519.PublicKey)
	}
	for _, e := range exports {
		m.Exports = append(m.Exports, gossip.Export{Name: e, Weight: 1, Healthy: true})
	}
	return m
}

// TestAdmitSteps: with pki, which members a node deals with and which of
// their exports it lists (README "Identity and policy").
func TestAdmitSteps(t *testing.T) {
	now := time.Now()
	other, _ := cert.NewCA("other", now, time.Hour)
	f := newPKIFixture(t)
	good, gk := f.issue(cert.Template{Name: "good", Site: "s", Exports: []string{"svc", "db-*"}}, now)
	expired, ek := f.issue(cert.Template{Name: "old", Site: "s", NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}, now)
	later, lk := f.issue(cert.Template{Name: "later", Site: "s", NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}, now)
	nkO, _ := cert.NewNodeKey()
	foreign, _ := other.Sign(cert.Template{Name: "foreign", Site: "s", NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, nkO)

	for _, s := range []struct {
		what    string
		m       gossip.Member
		admit   bool
		exports string
	}{
		{"valid", member("good", "s", gk.WG.Public(), good, gk.Sign, "svc", "db-1", "web"), true, "svc,db-1"},
		{"no record yet", gossip.Member{Name: "good", State: gossip.StateAlive}, false, ""},
		{"no certificate", member("good", "s", gk.WG.Public(), nil, gk.Sign), false, ""},
		{"other CA", member("foreign", "s", nkO.WG.Public(), foreign, nkO.Sign), false, ""},
		{"expired", member("old", "s", ek.WG.Public(), expired, ek.Sign), false, ""},
		{"not yet valid", member("later", "s", lk.WG.Public(), later, lk.Sign), false, ""},
		{"name mismatch", member("mallory", "s", gk.WG.Public(), good, gk.Sign), false, ""},
		{"site mismatch", member("good", "t", gk.WG.Public(), good, gk.Sign), false, ""},
		{"key mismatch", member("good", "s", ek.WG.Public(), good, gk.Sign), false, ""},
	} {
		out, certs := f.n.admit([]gossip.Member{s.m})
		if got := len(out) == 1; got != s.admit {
			t.Errorf("%s: admitted %v, want %v", s.what, got, s.admit)
			continue
		}
		if !s.admit {
			if len(certs) != 0 {
				t.Errorf("%s: refused but has an identity", s.what)
			}
			continue
		}
		var names []string
		for _, x := range out[0].Exports {
			names = append(names, x.Name)
		}
		if strings.Join(names, ",") != s.exports {
			t.Errorf("%s: exports %v, want %s", s.what, names, s.exports)
		}
		if c := certs[s.m.Meta.PublicKey]; c == nil || c.Name != s.m.Name {
			t.Errorf("%s: identity by WireGuard key missing", s.what)
		}
	}

	// Blocklisted: a pool that refuses one fingerprint.
	fb := newPKIFixture(t)
	bc, bnk := fb.issue(cert.Template{Name: "blocked", Site: "s"}, now)
	set := fb.n.pki.Load()
	pool, _ := cert.NewPool([]*cert.Certificate{fb.ca.Cert}, []cert.Fingerprint{bc.Fingerprint()})
	fb.n.pki.Store(&cert.Bundle{Pool: pool, Cert: set.Cert, Key: set.Key})
	if out, _ := fb.n.admit([]gossip.Member{member("blocked", "s", bnk.WG.Public(), bc, bnk.Sign)}); len(out) != 0 {
		t.Errorf("blocklisted certificate admitted")
	}
}

// TestAuthorizeDrillSteps: which drill orders a node obeys.
func TestAuthorizeDrillSteps(t *testing.T) {
	now := time.Now()
	f := newPKIFixture(t)
	driller, dk := f.issue(cert.Template{Name: "ops", Site: "s", Drill: true}, now)
	plain, pk := f.issue(cert.Template{Name: "web", Site: "s"}, now)
	members := []gossip.Member{member("ops", "s", dk.WG.Public(), driller, dk.Sign), member("web", "s", pk.WG.Public(), plain, pk.Sign)}
	f.n.rebuildCatalogFrom(f.n.admit(members))
	order := func(origin string) []byte {
		b, err := failover.DrillOrder{ID: failover.NewDrillID(), Site: "s", Duration: time.Second, Issued: now, Origin: origin}.Seal(f.n.cfg.Cluster.Key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sig := func(sealed []byte, k ed25519.PrivateKey) []byte {
		_, s, err := failover.SplitSignedDrillOrder(failover.SignDrillOrder(sealed, k))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	opsOrder, webOrder, ghostOrder := order("ops"), order("web"), order("ghost")
	for _, s := range []struct {
		what   string
		origin string
		sealed []byte
		sig    []byte
		want   string // "" = obeyed, else part of the refusal
	}{
		{"capable, own key", "ops", opsOrder, sig(opsOrder, dk.Sign), ""},
		{"unsigned", "ops", opsOrder, nil, "unsigned"},
		{"capable origin, another key", "ops", opsOrder, sig(opsOrder, pk.Sign), "not signed by the origin's key"},
		{"no capability", "web", webOrder, sig(webOrder, pk.Sign), "lacks the drill capability"},
		{"unknown origin", "ghost", ghostOrder, sig(ghostOrder, dk.Sign), "not an admitted member"},
	} {
		o, err := failover.OpenDrillOrder(s.sealed, f.n.cfg.Cluster.Key, now)
		if err != nil {
			t.Fatal(err)
		}
		err = f.n.authorizeDrill(o, s.sealed, s.sig)
		switch {
		case s.want == "" && err != nil:
			t.Errorf("%s: refused: %v", s.what, err)
		case s.want != "" && (err == nil || !strings.Contains(err.Error(), s.want)):
			t.Errorf("%s: %v, want a refusal containing %q", s.what, err, s.want)
		}
	}
}

// TestVetRecordSteps: the gossip hook that decides, with pki, whether a
// received record is stored. A certificate is public (every record carries
// one), so a key holder can replay a victim's valid certificate in a record
// it signs itself: refused, because the certificate binds the signing key.
// Each refusal is one log line naming the node and the reason, at most one
// a minute per node unless the reason changes.
func TestVetRecordSteps(t *testing.T) {
	now := time.Now()
	f := newPKIFixture(t)
	var logs strings.Builder
	f.n.log = slog.New(slog.NewTextHandler(&logs, nil))
	good, gk := f.issue(cert.Template{Name: "good", Site: "s"}, now)
	_, thief, _ := ed25519.GenerateKey(nil)
	other, _ := cert.NewCA("other", now, time.Hour)
	nkO, _ := cert.NewNodeKey()
	foreign, _ := other.Sign(cert.Template{Name: "good", Site: "s", NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, nkO)
	meta := gossip.Meta{Site: "s", PublicKey: gk.WG.Public()}
	for _, s := range []struct {
		what    string
		name    string
		meta    gossip.Meta
		cert    []byte
		signKey ed25519.PublicKey
		want    string // "" accepted, else part of the refusal
		lines   int    // refusal lines logged so far
	}{
		{"valid", "good", meta, good.Raw(), gk.Sign.Public().(ed25519.PublicKey), "", 0},
		{"replayed certificate, another signing key", "good", meta, good.Raw(), thief.Public().(ed25519.PublicKey), "not signed by the certificate's key", 1},
		{"same again: not logged again", "good", meta, good.Raw(), thief.Public().(ed25519.PublicKey), "not signed by the certificate's key", 1},
		{"no certificate: another reason, logged", "good", meta, nil, thief.Public().(ed25519.PublicKey), "no certificate", 2},
		{"garbage certificate", "good", meta, []byte("MDC\x01junk"), gk.Sign.Public().(ed25519.PublicKey), "malformed", 3},
		{"certificate from another CA", "good", gossip.Meta{Site: "s", PublicKey: nkO.WG.Public()}, foreign.Raw(), nkO.Sign.Public().(ed25519.PublicKey), "unknown CA", 4},
		{"victim's certificate under another name", "mallory", meta, good.Raw(), gk.Sign.Public().(ed25519.PublicKey), "name does not match", 5},
		{"victim's certificate, another WireGuard key", "good", gossip.Meta{Site: "s", PublicKey: nkO.WG.Public()}, good.Raw(), gk.Sign.Public().(ed25519.PublicKey), "WireGuard key does not match", 6},
		{"victim's certificate, another site", "good", gossip.Meta{Site: "t", PublicKey: gk.WG.Public()}, good.Raw(), gk.Sign.Public().(ed25519.PublicKey), "site does not match", 7},
	} {
		err := f.n.vetRecord(s.name, s.meta, s.cert, s.signKey)
		switch {
		case s.want == "" && err != nil:
			t.Errorf("%s: refused: %v", s.what, err)
		case s.want != "" && (err == nil || !strings.Contains(err.Error(), s.want)):
			t.Errorf("%s: %v, want a refusal containing %q", s.what, err, s.want)
		}
		if got := strings.Count(logs.String(), "identity refused"); got != s.lines {
			t.Errorf("%s: %d refusal lines, want %d:\n%s", s.what, got, s.lines, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `node=mallory reason="cert: certificate name does not match the node name`) {
		t.Errorf("refusal lines do not name the node and the reason:\n%s", logs.String())
	}
}

// TestRefusalLogSteps: one line per key per minute, and at once when the
// reason changes; the table stays bounded.
func TestRefusalLogSteps(t *testing.T) {
	var r refusalLog
	t0 := time.Unix(1_800_000_000, 0)
	for _, s := range []struct {
		key, reason string
		at          time.Duration
		want        bool
	}{
		{"node:a", "expired", 0, true},
		{"node:a", "expired", time.Second, false},
		{"node:b", "expired", time.Second, true},
		{"node:a", "blocklisted", 2 * time.Second, true},
		{"node:a", "blocklisted", 61 * time.Second, false},
		{"node:a", "blocklisted", 62 * time.Second, true},
	} {
		if got := r.allow(s.key, s.reason, t0.Add(s.at)); got != s.want {
			t.Errorf("allow(%s, %s) at +%v = %v, want %v", s.key, s.reason, s.at, got, s.want)
		}
	}
	for i := range 3 * maxRefusalKeys {
		r.allow(fmt.Sprint("node:", i), "x", t0)
	}
	if len(r.last) > maxRefusalKeys {
		t.Errorf("refusal table holds %d keys, limit %d", len(r.last), maxRefusalKeys)
	}
}

// TestReloadIdentitySteps: which identity changes a reload applies live
// and which it refuses, changing nothing (README "Rotation, step by step").
func TestReloadIdentitySteps(t *testing.T) {
	now := time.Now()
	f := newPKIFixture(t)
	k1, k2, k3 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	keys := func(ks ...[]byte) *config.Config {
		return &config.Config{Cluster: config.Cluster{Key: ks[0], Keys: ks}}
	}
	for _, s := range []struct {
		what     string
		old, new *config.Config
		commit   bool
		refusal  string
	}{
		{"same keys", keys(k1), keys(k1), false, ""},
		{"step 1: add", keys(k1), keys(k1, k2), true, ""},
		{"step 2: use", keys(k1, k2), keys(k2, k1), true, ""},
		{"step 3: retire", keys(k2, k1), keys(k2), true, ""},
		{"a key from a config built in code", &config.Config{Cluster: config.Cluster{Key: k1}}, keys(k1, k2), true, ""},
		{"no key in common", keys(k1, k2), keys(k3), false, "share none"},
	} {
		commit, _, err := f.n.reloadClusterKeys(s.old, s.new)
		switch {
		case s.refusal == "" && err != nil:
			t.Errorf("cluster keys, %s: refused: %v", s.what, err)
		case s.refusal != "" && (err == nil || !strings.Contains(err.Error(), s.refusal)):
			t.Errorf("cluster keys, %s: %v, want a refusal containing %q", s.what, err, s.refusal)
		case (commit != nil) != s.commit:
			t.Errorf("cluster keys, %s: commit %v, want %v", s.what, commit != nil, s.commit)
		}
	}

	running := f.n.pki.Load()
	renewed, err := f.ca.Sign(cert.Template{Name: "self", Site: "s", NotBefore: now.Add(-time.Minute), NotAfter: now.Add(2 * time.Hour)}, running.Key)
	if err != nil {
		t.Fatal(err)
	}
	rekeyed, rk := f.issue(cert.Template{Name: "self", Site: "s"}, now)
	bundle := func(c *cert.Certificate, k cert.NodeKey) *config.Config {
		return &config.Config{PKI: config.PKI{Set: &cert.Bundle{Pool: running.Pool, Cert: c, Key: k}}}
	}
	for _, s := range []struct {
		what    string
		new     *config.Config
		commit  bool
		restart string // RestartError key
	}{
		{"renewed certificate, same keys", bundle(renewed, running.Key), true, ""},
		{"same certificate (CA file or blocklist changed)", bundle(running.Cert, running.Key), true, ""},
		{"new keys", bundle(rekeyed, rk), false, "pki.key"},
		{"pki turned off", &config.Config{}, false, "pki"},
	} {
		commit, _, err := f.n.reloadPKI(f.n.cfg, s.new)
		var re *RestartError
		switch {
		case s.restart == "" && err != nil:
			t.Errorf("pki, %s: refused: %v", s.what, err)
		case s.restart != "" && (!errors.As(err, &re) || re.Key != s.restart):
			t.Errorf("pki, %s: %v, want a restart error for %s", s.what, err, s.restart)
		case (commit != nil) != s.commit:
			t.Errorf("pki, %s: commit %v, want %v", s.what, commit != nil, s.commit)
		}
		if f.n.pki.Load() != running {
			t.Fatalf("pki, %s: the running identity changed before commit", s.what)
		}
	}
	off := newPKIFixture(t)
	off.n.pki.Store(nil)
	if _, _, err := off.n.reloadPKI(&config.Config{}, f.n.cfg); err == nil {
		t.Errorf("pki turned on by reload: accepted")
	}
}

// TestAuthorizeDrillNoPKISteps: without pki a drill order is obeyed only
// if the key that signs its origin's gossip record signed it.
func TestAuthorizeDrillNoPKISteps(t *testing.T) {
	now := time.Now()
	f := newPKIFixture(t)
	f.n.pki.Store(nil)
	f.n.cfg.PKI.Set = nil
	opsWG, _ := key.NewPrivate()
	_, opsSign, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	unsigned := member("quiet", "s", opsWG.Public(), nil, nil)
	unsigned.Signed = false
	f.n.rebuildCatalogFrom(f.n.admit([]gossip.Member{member("ops", "s", opsWG.Public(), nil, opsSign), unsigned}))
	order := func(origin string) []byte {
		b, err := failover.DrillOrder{ID: failover.NewDrillID(), Site: "s", Duration: time.Second, Issued: now, Origin: origin}.Seal(f.n.cfg.Cluster.Key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sig := func(sealed []byte, k ed25519.PrivateKey) []byte {
		_, s, err := failover.SplitSignedDrillOrder(failover.SignDrillOrder(sealed, k))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ops, quiet := order("ops"), order("quiet")
	for _, s := range []struct {
		what   string
		sealed []byte
		sig    []byte
		want   string
	}{
		{"origin's record key", ops, sig(ops, opsSign), ""},
		{"another key", ops, sig(ops, other), "not signed by the origin's key"},
		{"unsigned", ops, nil, "unsigned"},
		{"origin without a signed record", quiet, sig(quiet, other), "not signed"},
	} {
		o, err := failover.OpenDrillOrder(s.sealed, f.n.cfg.Cluster.Key, now)
		if err != nil {
			t.Fatal(err)
		}
		err = f.n.authorizeDrill(o, s.sealed, s.sig)
		switch {
		case s.want == "" && err != nil:
			t.Errorf("%s: refused: %v", s.what, err)
		case s.want != "" && (err == nil || !strings.Contains(err.Error(), s.want)):
			t.Errorf("%s: %v, want a refusal containing %q", s.what, err, s.want)
		}
	}
}
