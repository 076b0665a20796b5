package config

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/cert"
)

// TestPKIConfig: the pki section and allow lists load, and every bad file
// or value is one error naming file:line:key.
func TestPKIConfig(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if _, err := cert.InitCA(filepath.Join(dir, "ca"), "ca", time.Hour*24, now); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca", "ca.crt")
	sign := func(name, site string) (crt, key string) {
		out := filepath.Join(dir, "n-"+name)
		if _, _, err := cert.SignNode(filepath.Join(dir, "ca"), out, cert.Template{Name: name, Site: site, Exports: []string{"svc"}}, time.Hour, now); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(out, name+".crt"), filepath.Join(out, name+".key")
	}
	crt, key := sign("n1", "s1")
	otherCrt, otherKey := sign("n2", "s1")
	openKey := filepath.Join(dir, "open.key")
	b, _ := os.ReadFile(key)
	os.WriteFile(openKey, b, 0o644)
	k1 := base64.StdEncoding.EncodeToString(rawKey)
	k2 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	keys2 := filepath.Join(dir, "two.key")
	os.WriteFile(keys2, []byte("# rotation\n"+k2+"\n\n"+k1+"\n"), 0o600)
	dup := filepath.Join(dir, "dup.key")
	os.WriteFile(dup, []byte(k1+"\n"+k1+"\n"), 0o600)

	path := filepath.Join(dir, "meshd.yaml")
	load := func(y string) (*Config, error) {
		t.Helper()
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(path, Overrides{})
	}
	base := "name: n1\nsite: s1\ncluster:\n  key_file: " + keys2 + "\n"
	pki := func(ca, c, k string) string { return "pki:\n  ca: " + ca + "\n  cert: " + c + "\n  key: " + k + "\n" }

	cfg, err := load(base + pki(caFile, crt, key) + "  blocklist: [" + strings.Repeat("ab", 32) + "]\nexports:\n  - name: svc\n    target: 127.0.0.1:1\n    allow: [\"site:s2\", \"group:g\", \"node:x\", \"*\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PKI.Set == nil || cfg.PKI.Set.Cert.Name != "n1" || len(cfg.Exports[0].Allow) != 4 {
		t.Fatalf("pki not loaded: %+v", cfg.PKI)
	}
	if len(cfg.Cluster.Keys) != 2 || string(cfg.Cluster.Keys[1]) != string(rawKey) || string(cfg.Cluster.Key) != string(cfg.Cluster.Keys[0]) {
		t.Fatalf("cluster keys %d, first is Key %v", len(cfg.Cluster.Keys), string(cfg.Cluster.Key) == string(cfg.Cluster.Keys[0]))
	}

	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"no key", base + "pki:\n  ca: " + caFile + "\n  cert: " + crt + "\n", []string{path + ":5: pki.key: required with pki"}},
		{"other node's cert", base + pki(caFile, otherCrt, key), []string{path + ":7: pki.cert: ", "name does not match"}},
		{"another node's key", base + pki(caFile, crt, otherKey), []string{path + ":8: pki.key: ", "does not hold the keys"}},
		{"readable key", base + pki(caFile, crt, openKey), []string{path + ":8: pki.key: ", "want 0600"}},
		{"cert as CA", base + pki(crt, crt, key), []string{path + ":6: pki.ca: ", "not a CA certificate"}},
		{"key as cert", base + pki(caFile, key, key), []string{path + ":7: pki.cert: ", "unexpected PEM block"}},
		{"missing CA", base + pki(filepath.Join(dir, "nope"), crt, key), []string{path + ":6: pki.ca: ", "no such file"}},
		{"site mismatch", strings.Replace(base, "site: s1", "site: s2", 1) + pki(caFile, crt, key), []string{path + ":7: pki.cert: ", "site"}},
		{"blocklisted", base + pki(caFile, crt, key) + "  blocklist: [" + fingerprint(t, crt) + "]\n", []string{path + ":7: pki.cert: ", "blocklisted"}},
		{"bad fingerprint", base + pki(caFile, crt, key) + "  blocklist: [abc]\n", []string{path + ":9: pki.blocklist[0]: ", "64-character hex"}},
		{"unknown pki key", base + "pki:\n  cas: x\n", []string{path + ":6: pki.cas: unknown key"}},
		{"bad selector", base + "exports:\n  - name: svc\n    target: 127.0.0.1:1\n    allow: [\"host:x\"]\n", []string{path + ":8: exports[0].allow[0]: \"host:x\" is not allowed"}},
		{"duplicate cluster key", strings.Replace(base, keys2, dup, 1), []string{path + ":4: cluster.key_file: ", "line 2: the same key twice"}},
	} {
		_, err := load(tc.yaml)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			t.Errorf("%s: multi-line error %q", tc.name, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, msg, w)
			}
		}
	}
}

func fingerprint(t *testing.T, path string) string {
	c, err := cert.ReadCertFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.Fingerprint().String()
}
