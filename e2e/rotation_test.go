package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRotation: the three rotations of README "Identity and policy" on a running mesh with
// pki, under a client opening a connection every 50 ms: the cluster key
// (three `meshd reload` rounds: add, use, retire), the CA (two CAs in the
// trust file during the overlap, certificates re-issued by the new CA for
// the same keys, the old CA retired) — which also renews every
// certificate — and one node's certificate renewed under the same CA (one
// reload). Zero failed connections, no member flap.
func TestRotation(t *testing.T) {
	c := newCluster(t)
	p := newPKI(t, c.dir, "ca1", "ca2")
	trust := filepath.Join(c.dir, "trust.crt")
	ca1, err := os.ReadFile(filepath.Join(c.dir, "ca1", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := os.ReadFile(filepath.Join(c.dir, "ca2", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile := func(path string, data []byte, mode os.FileMode) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(trust, ca1, 0o644)

	bA, bB := startFOBackend(t, "a-1"), startFOBackend(t, "b-1")
	a := c.start(nodeSpec{Name: "a-1", Site: "a", Exports: []exportSpec{{Name: "svc", Target: bA.Addr()}},
		PKI: p.issue("ca1", trust, "a-1", "a", "--exports", "svc")})
	b := c.start(nodeSpec{Name: "b-1", Site: "b", Exports: []exportSpec{{Name: "svc", Target: bB.Addr()}},
		PKI: p.issue("ca1", trust, "b-1", "b", "--exports", "svc")})
	imp := c.start(nodeSpec{Name: "c-1", Site: "c", Imports: []importSpec{{Name: "svc", Sites: []string{"a", "b"}}},
		PKI: p.issue("ca1", trust, "c-1", "c")})
	nodes := []*meshNode{a, b, imp}
	waitFor(t, 20*time.Second, "c-1 sees a-1 and b-1 up", func() (bool, string) { return foSeesUp(t, imp, "svc", "a-1", "b-1") })
	fp0 := status(t, a).Node.Identity.Fingerprint

	client := startFOClient(t, imp.Imports["svc"])
	var lastReload time.Time // when reloadAll's last reload returned
	reloadAll := func(step string) {
		t.Helper()
		for _, n := range nodes {
			if _, errOut, code := runMeshd(t, 20*time.Second, "reload", "--config", n.Config); code != 0 {
				t.Fatalf("%s: reload %s: exit %d: %s", step, n.Name, code, errOut)
			}
		}
		lastReload = time.Now()
		time.Sleep(700 * time.Millisecond) // a few gossip rounds and client connections per step
	}

	// Cluster key: add the new one, use it, retire the old one.
	oldKey, err := os.ReadFile(c.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	newKey, _, code := runMeshd(t, 10*time.Second, "keygen")
	if code != 0 {
		t.Fatal("keygen failed")
	}
	old, nw := strings.TrimSpace(string(oldKey)), strings.TrimSpace(newKey)
	for _, step := range []struct{ name, file string }{
		{"cluster key 1/3 (add)", old + "\n" + nw + "\n"},
		{"cluster key 2/3 (use)", nw + "\n" + old + "\n"},
		{"cluster key 3/3 (retire)", nw + "\n"},
	} {
		writeFile(c.keyFile, []byte(step.file), 0o600)
		reloadAll(step.name)
	}

	// CA: trust both, re-issue from ca2 (same keys), retire ca1.
	writeFile(trust, append(append([]byte{}, ca1...), ca2...), 0o644)
	reloadAll("CA 1/3 (trust both)")
	for _, n := range nodes {
		args := []string{}
		if n == a || n == b {
			args = []string{"--exports", "svc"}
		}
		p.issueInto("ca2", "ca1", n.Name, n.Site, args...)
	}
	reloadAll("CA 2/3 (certificates from ca2)")
	// Step 3 only once every node lists every other's new certificate
	// (README "Rotation, step by step"): the records travel by gossip, a
	// missed broadcast by the next push/pull (every 10 s).
	waitCerts := func(what string, since time.Time) {
		t.Helper()
		waitFor(t, 30*time.Second, what, func() (bool, string) {
			own := map[string]string{}
			for _, n := range nodes {
				own[n.Name] = status(t, n).Node.Identity.Fingerprint
			}
			for _, n := range nodes {
				st := status(t, n)
				for _, o := range nodes {
					if pe, ok := peer(st, o.Name); o != n && (!ok || pe.CertFingerprint != own[o.Name]) {
						return false, fmt.Sprintf("%s sees %s's certificate %q, want %q", n.Name, o.Name, pe.CertFingerprint, own[o.Name])
					}
				}
			}
			return true, ""
		})
		t.Logf("%s: %v after the (last) reload", what, time.Since(since).Round(time.Millisecond))
	}
	waitCerts("every node sees the certificates from ca2", lastReload)
	writeFile(trust, ca2, 0o644)
	reloadAll("CA 3/3 (retire ca1)")

	// Certificate renewal: b-1's certificate re-issued (same keys, same
	// CA), only b-1 reloaded; the others pick it up from its record.
	fpB := status(t, b).Node.Identity.Fingerprint
	p.issueInto("ca2", "ca1", b.Name, b.Site, "--exports", "svc")
	if _, errOut, code := runMeshd(t, 20*time.Second, "reload", "--config", b.Config); code != 0 {
		t.Fatalf("renewal: reload b-1: exit %d: %s", code, errOut)
	}
	renewed := time.Now()
	if fp := status(t, b).Node.Identity.Fingerprint; fp == fpB {
		t.Fatalf("b-1's fingerprint did not change on reload of the renewed certificate")
	}
	waitCerts("every node sees b-1's renewed certificate", renewed)

	time.Sleep(500 * time.Millisecond)
	client.Stop()
	recs := client.records()
	if fails := client.failures(); len(fails) > 0 {
		t.Fatalf("%d of %d connections failed during the rotations; first: %+v", len(fails), len(recs), fails[0])
	}
	if len(recs) < 100 {
		t.Fatalf("only %d client connections during the rotations", len(recs))
	}
	if ok, why := foSeesUp(t, imp, "svc", "a-1", "b-1"); !ok {
		t.Fatalf("after the rotations: %s", why)
	}
	if fp := status(t, a).Node.Identity.Fingerprint; fp == fp0 {
		t.Errorf("a-1's certificate fingerprint did not change on reload")
	}
	for _, n := range nodes {
		log := n.logText()
		for _, flap := range []string{"gossip: member failed", "gossip: member suspect", "identity refused"} {
			if strings.Contains(log, flap) {
				t.Errorf("%s logged %q during the rotations", n.Name, flap)
			}
		}
	}
	t.Logf("%d connections, 0 failed, across 9 reload rounds and a renewal", len(recs))
}
