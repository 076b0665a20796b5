package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCertCLI: `meshd ca init`, `meshd cert sign` and `meshd cert show`
// write the files README "Commands" names with the right modes, show what was signed,
// renew with the same keys, and refuse bad input with one line and no files.
func TestCertCLI(t *testing.T) {
	dir := t.TempDir()
	caDir, nodeDir := filepath.Join(dir, "ca"), filepath.Join(dir, "nodes")
	if _, errOut, code := runMeshd(t, 20*time.Second, "ca", "init", "--out", caDir, "--name", "test-ca"); code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, errOut)
	}
	if _, errOut, code := runMeshd(t, 20*time.Second, "ca", "init", "--out", caDir); code == 0 || !oneLine(errOut) {
		t.Fatalf("second ca init over an existing CA: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := runMeshd(t, 20*time.Second, "cert", "sign", "--ca", caDir, "--name", "onprem-1", "--site", "onprem",
		"--groups", "db,web", "--exports", "postgres,echo-*", "--drill", "--valid", "48h", "--out", nodeDir); code != 0 {
		t.Fatalf("cert sign: exit %d: %s", code, errOut)
	}
	for path, mode := range map[string]os.FileMode{
		filepath.Join(caDir, "ca.key"): 0o600, filepath.Join(caDir, "ca.crt"): 0o644,
		filepath.Join(nodeDir, "onprem-1.key"): 0o600, filepath.Join(nodeDir, "onprem-1.crt"): 0o644,
	} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v (mode %v, want %v)", path, err, fi.Mode().Perm(), mode)
		}
	}
	show := func() map[string]any {
		out, errOut, code := runMeshd(t, 20*time.Second, "cert", "show", "--json", filepath.Join(nodeDir, "onprem-1.crt"))
		if code != 0 {
			t.Fatalf("cert show: exit %d: %s", code, errOut)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("cert show --json: %v: %s", err, out)
		}
		return m
	}
	m := show()
	if m["name"] != "onprem-1" || m["site"] != "onprem" || m["drill"] != true || m["kind"] != "node" ||
		len(m["groups"].([]any)) != 2 || m["exports"].([]any)[1] != "echo-*" || len(m["fingerprint"].(string)) != 64 ||
		!strings.HasPrefix(m["expires_in"].(string), "48h") && !strings.HasPrefix(m["expires_in"].(string), "47h") {
		t.Fatalf("cert show: %v", m)
	}
	// Renewal keeps the keys, changes the certificate.
	if _, errOut, code := runMeshd(t, 20*time.Second, "cert", "sign", "--ca", caDir, "--name", "onprem-1", "--site", "onprem", "--out", nodeDir); code != 0 {
		t.Fatalf("renew: exit %d: %s", code, errOut)
	}
	m2 := show()
	if m2["public_key"] != m["public_key"] || m2["signing_key"] != m["signing_key"] || m2["fingerprint"] == m["fingerprint"] {
		t.Fatalf("renewal: before %v, after %v", m, m2)
	}
	text, _, code := runMeshd(t, 20*time.Second, "cert", "show", filepath.Join(caDir, "ca.crt"))
	if code != 0 || !strings.Contains(text, "kind:        ca") || !strings.Contains(text, "test-ca") {
		t.Fatalf("cert show ca.crt: exit %d: %s", code, text)
	}
	for _, args := range [][]string{
		{"cert", "sign", "--ca", caDir, "--name", "x", "--out", nodeDir}, // no --site
		{"cert", "sign", "--ca", filepath.Join(dir, "nope"), "--name", "x", "--site", "s", "--out", nodeDir},
		{"cert", "sign", "--ca", caDir, "--name", "x", "--site", "s", "--exports", "[", "--out", nodeDir},
		{"cert", "sign", "--bogus"},
		{"cert", "show", filepath.Join(caDir, "ca.key")},
		{"cert", "show"},
	} {
		_, errOut, code := runMeshd(t, 20*time.Second, args...)
		if code == 0 || !oneLine(errOut) {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "x.key")); err == nil {
		t.Error("a refused cert sign left x.key behind")
	}
}
