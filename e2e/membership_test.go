package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWrongClusterKey: a node with another cluster key never gets into a
// mesh, and both sides say why in one clear line.
func TestWrongClusterKey(t *testing.T) {
	c := newCluster(t)
	a := c.start(nodeSpec{Name: "good-1", Site: "onprem"})
	b := c.start(nodeSpec{Name: "good-2", Site: "cloud"})
	waitMesh(t, 20*time.Second, a, b)

	badKey := c.newKeyFile("other.key")
	x := c.start(nodeSpec{Name: "intruder", Site: "onprem", KeyFile: badKey})

	// The intruder says why it cannot join.
	waitFor(t, 15*time.Second, `intruder's log to say "cluster key mismatch"`, func() (bool, string) {
		if !x.running() {
			return false, "intruder exited"
		}
		return strings.Contains(x.logText(), "cluster key mismatch"), "not yet"
	})

	t.Logf("intruder: %s", grepLines(x.logText(), "cluster key mismatch"))

	// Watch for a few seconds: the intruder never shows up on the good
	// nodes, and sees no alive peer itself.
	end := time.Now().Add(4 * time.Second)
	for time.Now().Before(end) {
		for _, n := range []*meshNode{a, b} {
			st := status(t, n)
			if p, ok := peer(st, "intruder"); ok {
				t.Fatalf("%s lists the intruder with another cluster key: %+v", n.Name, p)
			}
			if len(st.Peers) != 1 || st.Peers[0].State != "alive" {
				t.Fatalf("%s peers changed: %+v", n.Name, st.Peers)
			}
		}
		st := status(t, x)
		for _, p := range st.Peers {
			if p.State == "alive" {
				t.Fatalf("intruder sees alive peer %+v", p)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}

	// The first node (the one the intruder contacts) says it cannot
	// decrypt, in one clear, rate-limited line.
	log := a.logText()
	t.Logf("good-1: %s", grepLines(log, "decrypt"))
	if k := countLines(log, "cannot decrypt"); k < 1 || k > 5 {
		t.Errorf(`good-1's log has %d lines with "cannot decrypt", want 1..5:\n%s`, k, grepLines(log, "decrypt"))
	}
	if !a.running() || !b.running() {
		t.Fatal("a good node exited")
	}
}

// TestGracefulLeave: SIGTERM makes a node leave: it exits 0 quickly, the
// others see it `left`, and its control socket is removed.
func TestGracefulLeave(t *testing.T) {
	c := newCluster(t)
	a := c.start(nodeSpec{Name: "n1", Site: "onprem"})
	joined := time.Now()
	b := c.start(nodeSpec{Name: "n2", Site: "onprem"})
	x := c.start(nodeSpec{Name: "n3", Site: "cloud"})
	// README "Failover and drills": a joining node is alive everywhere within 5 s on a LAN.
	waitAlive(t, 5*time.Second-time.Since(joined), "n2 and n3 to be alive everywhere within 5s of joining", []*meshNode{a, b, x}, "n2", "n3")
	waitMesh(t, 20*time.Second, a, b, x)
	sock := filepath.Join(x.Dir, "meshd.sock")
	// The node key and the control socket are private to the node's user.
	for _, f := range []string{sock, filepath.Join(x.Dir, "node.key")} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatalf("n3: %v", err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, perm)
		}
	}
	first := status(t, x).Node

	start := time.Now()
	x.signal(t, syscall.SIGTERM)
	if code := x.waitExit(t, 5*time.Second); code != 0 {
		t.Errorf("n3 exited with status %d after SIGTERM, want 0", code)
	}
	t.Logf("n3 exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))

	for _, n := range []*meshNode{a, b} {
		left := 5*time.Second - time.Since(start)
		waitFor(t, max(left, 0), n.Name+" to see n3 left within 5s of SIGTERM", func() (bool, string) {
			st, err := tryStatus(t, n)
			if err != nil {
				return false, err.Error()
			}
			p, ok := peer(st, "n3")
			return ok && p.State == "left", "n3: " + p.State
		})
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket %s still there after a graceful exit (stat: %v)", sock, err)
	}
	if !strings.Contains(x.logText(), "leaving") {
		t.Errorf("n3's log does not mention leaving the mesh")
	}
	// The rest of the mesh is unharmed.
	waitMesh(t, 5*time.Second, a, b)

	// The node comes back with the same config (same name, key and
	// addresses) and is alive again everywhere.
	x.restart(t)
	back := time.Now()
	waitAlive(t, 5*time.Second, "n3 to be alive again within 5s of restarting", []*meshNode{a, b}, "n3")
	t.Logf("n3 alive again %s after restarting", time.Since(back).Round(time.Millisecond))
	waitMesh(t, 20*time.Second, a, b, x)
	// Same node key, so same identity and mesh address.
	if again := status(t, x).Node; again.PublicKey != first.PublicKey || again.MeshIP != first.MeshIP {
		t.Errorf("n3's identity changed across a restart: %s %s -> %s %s", first.PublicKey, first.MeshIP, again.PublicKey, again.MeshIP)
	}
	x.signal(t, syscall.SIGINT)
	if code := x.waitExit(t, 5*time.Second); code != 0 {
		t.Errorf("n3 exited with status %d after SIGINT, want 0", code)
	}
}

// waitAlive waits until every observer lists every named peer as alive.
func waitAlive(t *testing.T, d time.Duration, what string, observers []*meshNode, names ...string) {
	t.Helper()
	waitFor(t, max(d, 0), what, func() (bool, string) {
		for _, o := range observers {
			st, err := tryStatus(t, o)
			if err != nil {
				return false, err.Error()
			}
			for _, name := range names {
				if name == o.Name {
					continue
				}
				if p, ok := peer(st, name); !ok || p.State != "alive" {
					return false, fmt.Sprintf("%s sees %s as %q", o.Name, name, p.State)
				}
			}
		}
		return true, ""
	})
}

// grepLines returns the lines of text containing sub.
func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestJoinFlags: --name, --site, --join and --data-dir override the file.
func TestJoinFlags(t *testing.T) {
	c := newCluster(t)
	a := c.start(nodeSpec{Name: "seed", Site: "onprem"})
	dir := filepath.Join(c.dir, "flagdir")
	b := c.start(nodeSpec{Name: "file-name", Site: "file-site", Join: []string{},
		Flags:  []string{"--name", "flag-name", "--site", "flag-site", "--join", addr(a.GossipPort), "--data-dir", dir},
		Socket: filepath.Join(dir, "meshd.sock")})
	b.Name = "flag-name"
	waitMesh(t, 20*time.Second, a, b)
	st := status(t, a)
	if p, _ := peer(st, "flag-name"); p.Site != "flag-site" {
		t.Errorf("seed sees %+v, want flag-name in site flag-site", p)
	}
	if _, ok := peer(st, "file-name"); ok {
		t.Errorf("the file's name was used despite --name")
	}
	if n := status(t, b).Node; n.Name != "flag-name" || n.Site != "flag-site" {
		t.Errorf("node: %+v", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "node.key")); err != nil {
		t.Errorf("--data-dir: %v", err)
	}
	if _, err := os.Stat(b.Dir); err == nil {
		t.Errorf("the file's data_dir %s was created despite --data-dir", b.Dir)
	}
}
