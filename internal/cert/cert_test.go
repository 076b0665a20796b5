package cert

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

var t0 = time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)

func newCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, t0, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t testing.TB, ca *CA, tm Template) (*Certificate, NodeKey) {
	t.Helper()
	nk, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	if tm.NotBefore.IsZero() {
		tm.NotBefore = t0
	}
	if tm.NotAfter.IsZero() {
		tm.NotAfter = t0.Add(24 * time.Hour)
	}
	c, err := ca.Sign(tm, nk)
	if err != nil {
		t.Fatal(err)
	}
	return c, nk
}

func TestRoundTrip(t *testing.T) {
	ca := newCA(t, "mesh-ca")
	c, nk := issue(t, ca, Template{Name: "onprem-1", Site: "onprem", Groups: []string{"db", "web"},
		Exports: []string{"postgres", "echo-*"}, Drill: true})
	got, err := Parse(c.Raw())
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "onprem-1" || got.Site != "onprem" || !slices.Equal(got.Groups, []string{"db", "web"}) ||
		!slices.Equal(got.Exports, []string{"postgres", "echo-*"}) || !got.Drill || got.IsCA ||
		got.WGKey != nk.WG.Public() || !got.SigningKey.Equal(nk.Sign.Public()) ||
		!got.NotBefore.Equal(t0) || !got.NotAfter.Equal(t0.Add(24*time.Hour)) ||
		got.Issuer != ca.Cert.Fingerprint() || got.Fingerprint() != c.Fingerprint() {
		t.Fatalf("round trip: got %+v", got)
	}
	if !got.CheckSignature(ca.Cert.SigningKey) {
		t.Fatal("signature does not verify after parse")
	}
	pc, err := ParsePEM(append(ca.Cert.EncodePEM(), c.EncodePEM()...))
	if err != nil || len(pc) != 2 || !pc[0].IsCA || pc[1].Name != "onprem-1" {
		t.Fatalf("ParsePEM: %v, %d", err, len(pc))
	}
	k2, err := ParseNodeKey(EncodeNodeKey(nk))
	if err != nil || k2.WG != nk.WG || !k2.Sign.Equal(nk.Sign) {
		t.Fatalf("node key round trip: %v", err)
	}
}

func TestTamperedSignature(t *testing.T) {
	ca := newCA(t, "ca")
	c, _ := issue(t, ca, Template{Name: "a", Site: "s"})
	raw := bytes.Clone(c.Raw())
	// Change the site "s" -> "t" inside the signed part.
	i := bytes.Index(raw, []byte{1, 'a', 1, 's'})
	if i < 0 {
		t.Fatal("site not found")
	}
	raw[i+3] = 't'
	forged, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := NewPool([]*Certificate{ca.Cert}, nil)
	if r := ReasonOf(p.Verify(forged, t0.Add(time.Hour))); r != BadSignature {
		t.Fatalf("tampered certificate: %v, want %v", r, BadSignature)
	}
}

func TestVerifySteps(t *testing.T) {
	ca := newCA(t, "ca")
	other := newCA(t, "other")
	good, nk := issue(t, ca, Template{Name: "n1", Site: "s1"})
	foreign, fk := issue(t, other, Template{Name: "n1", Site: "s1"})
	later, lk := issue(t, ca, Template{Name: "n1", Site: "s1", NotBefore: t0.Add(48 * time.Hour), NotAfter: t0.Add(72 * time.Hour)})
	blocked, bk := issue(t, ca, Template{Name: "n1", Site: "s1"})
	p, err := NewPool([]*Certificate{ca.Cert}, []Fingerprint{blocked.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	both, _ := NewPool([]*Certificate{ca.Cert, other.Cert}, nil)
	wrongKey, _ := NewNodeKey()
	for _, tc := range []struct {
		name string
		pool *Pool
		c    *Certificate
		node string
		site string
		wg   key.PublicKey
		now  time.Time
		want Reason
	}{
		{"valid", p, good, "n1", "s1", nk.WG.Public(), t0.Add(time.Hour), OK},
		{"valid at not_before", p, good, "n1", "s1", nk.WG.Public(), t0, OK},
		{"no certificate", p, nil, "n1", "s1", nk.WG.Public(), t0, NoCertificate},
		{"other CA", p, foreign, "n1", "s1", fk.WG.Public(), t0.Add(time.Hour), UnknownCA},
		{"other CA trusted during rotation", both, foreign, "n1", "s1", fk.WG.Public(), t0.Add(time.Hour), OK},
		{"expired at not_after", p, good, "n1", "s1", nk.WG.Public(), t0.Add(24 * time.Hour), Expired},
		{"expired", p, good, "n1", "s1", nk.WG.Public(), t0.Add(25 * time.Hour), Expired},
		{"not yet valid", p, later, "n1", "s1", lk.WG.Public(), t0.Add(time.Hour), NotYetValid},
		{"later one valid later", p, later, "n1", "s1", lk.WG.Public(), t0.Add(50 * time.Hour), OK},
		{"blocklisted", p, blocked, "n1", "s1", bk.WG.Public(), t0.Add(time.Hour), Blocklisted},
		{"name mismatch", p, good, "n2", "s1", nk.WG.Public(), t0.Add(time.Hour), NameMismatch},
		{"site mismatch", p, good, "n1", "s2", nk.WG.Public(), t0.Add(time.Hour), SiteMismatch},
		{"key mismatch", p, good, "n1", "s1", wrongKey.WG.Public(), t0.Add(time.Hour), KeyMismatch},
		{"CA as node", p, ca.Cert, "ca", "", key.PublicKey{}, t0.Add(time.Hour), NotANode},
		{"CA expired", p, good, "n1", "s1", nk.WG.Public(), t0.Add(11 * 365 * 24 * time.Hour), Expired},
	} {
		err := tc.pool.VerifyPeer(tc.c, tc.node, tc.site, tc.wg, tc.now)
		if got := ReasonOf(err); got != tc.want {
			t.Errorf("%s: got %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
	blockCA, _ := NewPool([]*Certificate{ca.Cert}, []Fingerprint{ca.Cert.Fingerprint()})
	if r := ReasonOf(blockCA.Verify(good, t0.Add(time.Hour))); r != Blocklisted {
		t.Errorf("blocklisted CA: %v", r)
	}
}

func TestAllowSteps(t *testing.T) {
	ca := newCA(t, "ca")
	c, _ := issue(t, ca, Template{Name: "web-1", Site: "cloud", Groups: []string{"web", "ops"}})
	for _, tc := range []struct {
		sel  []string
		c    *Certificate
		want bool
	}{
		{nil, c, true},
		{nil, nil, true},
		{[]string{"*"}, c, true},
		{[]string{"*"}, nil, true},
		{[]string{"site:cloud"}, c, true},
		{[]string{"site:onprem"}, c, false},
		{[]string{"group:web"}, c, true},
		{[]string{"group:ops"}, c, true},
		{[]string{"group:db"}, c, false},
		{[]string{"node:web-1"}, c, true},
		{[]string{"node:web-2"}, c, false},
		{[]string{"node:web-2", "group:ops"}, c, true},
		{[]string{"site:cloud"}, nil, false},
		{[]string{"site:"}, c, false},
		{[]string{"cloud"}, c, false},
		{[]string{"group:web-1"}, c, false},
		{[]string{"node:cloud"}, c, false},
	} {
		if got := Allow(tc.sel, tc.c); got != tc.want {
			t.Errorf("Allow(%q, cert=%v) = %v, want %v", tc.sel, tc.c != nil, got, tc.want)
		}
	}
	for _, s := range []string{"*", "site:a", "group:b", "node:c"} {
		if ValidSelector(s) != nil {
			t.Errorf("ValidSelector(%q) failed", s)
		}
	}
	for _, s := range []string{"", "site:", "host:x", "a", "**"} {
		if ValidSelector(s) == nil {
			t.Errorf("ValidSelector(%q) accepted", s)
		}
	}
}

func TestMayExportSteps(t *testing.T) {
	ca := newCA(t, "ca")
	c, _ := issue(t, ca, Template{Name: "n", Site: "s", Exports: []string{"postgres", "echo-*", "db?"}})
	none, _ := issue(t, ca, Template{Name: "n", Site: "s"})
	all, _ := issue(t, ca, Template{Name: "n", Site: "s", Exports: []string{"*"}})
	for _, tc := range []struct {
		c    *Certificate
		name string
		want bool
	}{
		{c, "postgres", true},
		{c, "postgres2", false},
		{c, "echo-1", true},
		{c, "echo-", true},
		{c, "echo", false},
		{c, "db1", true},
		{c, "db12", false},
		{none, "postgres", false},
		{all, "anything", true},
		{nil, "postgres", false},
	} {
		if got := tc.c.MayExport(tc.name); got != tc.want {
			t.Errorf("MayExport(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSignRefusesBadInput(t *testing.T) {
	ca := newCA(t, "ca")
	nk, _ := NewNodeKey()
	for _, tm := range []Template{
		{Name: "", Site: "s"},
		{Name: "n", Site: ""},
		{Name: "a,b", Site: "s"},
		{Name: "n", Site: "s", Groups: []string{""}},
		{Name: "n", Site: "s", Exports: []string{"["}},
		{Name: strings.Repeat("x", 256), Site: "s"},
	} {
		tm.NotBefore, tm.NotAfter = t0, t0.Add(time.Hour)
		if _, err := ca.Sign(tm, nk); err == nil {
			t.Errorf("Sign(%+v) accepted", tm)
		}
	}
	c, err := ca.Sign(Template{Name: "n", Site: "s", NotBefore: t0, NotAfter: t0.Add(100 * 365 * 24 * time.Hour)}, nk)
	if err != nil || !c.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("a node certificate outlives its CA: %v, %v", err, c.NotAfter)
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	if err := WriteCA(dir, ca); err != nil {
		t.Fatal(err)
	}
	if err := WriteCA(dir, ca); err == nil {
		t.Fatal("WriteCA overwrote an existing CA key")
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode: %v %v", fi.Mode(), err)
	}
	back, err := ReadCA(dir)
	if err != nil || back.Cert.Fingerprint() != ca.Cert.Fingerprint() || !back.Key.Equal(ca.Key) {
		t.Fatalf("ReadCA: %v", err)
	}
	c, nk := issue(t, back, Template{Name: "n1", Site: "s"})
	cp, kp, err := WriteNode(dir, c, nk)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(kp); fi.Mode().Perm() != 0o600 {
		t.Fatalf("node key mode %v", fi.Mode())
	}
	gotC, err := ReadCertFile(cp)
	if err != nil || gotC.Fingerprint() != c.Fingerprint() {
		t.Fatalf("ReadCertFile: %v", err)
	}
	gotK, err := ReadNodeKeyFile(kp)
	if err != nil || gotK.WG != nk.WG {
		t.Fatalf("ReadNodeKeyFile: %v", err)
	}
	if err := os.Chmod(kp, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadNodeKeyFile(kp); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("world-readable key accepted: %v", err)
	}
	if _, err := ReadCertFile(filepath.Join(dir, CAKeyFile)); err == nil {
		t.Fatal("a key file parsed as a certificate")
	}
}

func TestParseRejects(t *testing.T) {
	ca := newCA(t, "ca")
	c, _ := issue(t, ca, Template{Name: "n", Site: "s"})
	raw := c.Raw()
	for name, b := range map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("XDC"), raw[3:]...),
		"version":   append(append([]byte("MDC"), 2), raw[4:]...),
		"truncated": raw[:len(raw)-1],
		"trailing":  append(bytes.Clone(raw), 0),
		"huge":      make([]byte, MaxCertSize+1),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSignKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k, err := LoadOrCreateSignKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateSignKey(dir)
	if err != nil || !again.Equal(k) {
		t.Fatalf("second load: %v, same key %v", err, again.Equal(k))
	}
	p := filepath.Join(dir, SignKeyFile)
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	os.Chmod(p, 0o640)
	if _, err := LoadOrCreateSignKey(dir); err == nil {
		t.Fatal("group-readable signing key accepted")
	}
	os.Chmod(p, 0o600)
	os.WriteFile(p, []byte("junk"), 0o600)
	if _, err := LoadOrCreateSignKey(dir); err == nil {
		t.Fatal("junk signing key accepted")
	}
}
