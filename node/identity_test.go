package node

import (
	"crypto/ed25519"
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
