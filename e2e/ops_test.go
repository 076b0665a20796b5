package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/proxyproto"
	"github.com/meshd/meshd/internal/tcpserver"
	"github.com/meshd/meshd/node"
)

// writeConfig rewrites n's config file from spec (what a reload reads).
func (c *cluster) writeConfig(n *meshNode, s nodeSpec, extra string) {
	c.t.Helper()
	for _, im := range s.Imports {
		if _, ok := n.Imports[im.Name]; !ok {
			l := im.Listen
			if l == "" {
				l = addr(freePort(c.t))
			}
			n.Imports[im.Name] = l
		}
	}
	if err := os.WriteFile(n.Config, []byte(c.configYAML(n, s)+extra), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// pacedEcho sends size pseudo-random bytes through addr in chunks with a
// pause after each (so that the transfer spans what the test does
// meanwhile), half-closes, reads the echo to EOF and checks it. It returns
// nil only if every byte came back intact.
func pacedEcho(addr string, size, chunk int, pause, d time.Duration) error {
	cn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer cn.Close()
	cn.SetDeadline(time.Now().Add(d))
	src := rand.NewChaCha8([32]byte{42})
	hs := sha256.New()
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, chunk)
		for left := size; left > 0; left -= len(buf) {
			buf = buf[:min(chunk, left)]
			src.Read(buf)
			hs.Write(buf)
			if _, err := cn.Write(buf); err != nil {
				werr <- err
				return
			}
			time.Sleep(pause)
		}
		werr <- cn.(*net.TCPConn).CloseWrite()
	}()
	hr := sha256.New()
	n, rerr := io.Copy(hr, cn)
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if rerr != nil {
		return fmt.Errorf("read echo: %w after %d bytes", rerr, n)
	}
	if n != int64(size) || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
		return fmt.Errorf("echo differs: %d of %d bytes, checksum equal %v", n, size, bytes.Equal(hs.Sum(nil), hr.Sum(nil)))
	}
	return nil
}

// servedBy connects through an import and returns the name the backend
// announced (foBackend), after a full echo round trip.
func servedBy(address string) (string, error) {
	name, _, err := foExchange(address, 1, 5*time.Second)
	return name, err
}

// waitServedBy waits until a new connection through address is served by want.
func waitServedBy(t *testing.T, d time.Duration, address, want string) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, d, "connections through "+address+" served by "+want, func() (bool, string) {
		got, err := servedBy(address)
		return err == nil && got == want, fmt.Sprintf("served by %q, err %v", got, err)
	})
	return time.Since(start)
}

// TestReload (issue #12 problem 2, README "Operations"): a reload adds an import and
// an export (SIGHUP on one node, `meshd reload` on another) and changes an
// import's site order while a checksummed transfer through an unchanged
// import continues intact; an invalid file and a restart-only change are
// refused with a one-line file:line error and change nothing.
func TestReload(t *testing.T) {
	c := newCluster(t)
	echo := startBackend(t, "127.0.0.1:0")
	webX, webY, extraX := startFOBackend(t, "x"), startFOBackend(t, "y"), startFOBackend(t, "x-extra")

	specX := nodeSpec{Name: "x", Site: "s1", Exports: []exportSpec{
		{Name: "stream", Target: echo.Addr()}, {Name: "web", Target: webX.Addr()}}}
	x := c.start(specX)
	y := c.start(nodeSpec{Name: "y", Site: "s2", Exports: []exportSpec{{Name: "web", Target: webY.Addr()}, {Name: "old", Target: webY.Addr()}}})
	specZ := nodeSpec{Name: "z", Site: "s3", Imports: []importSpec{
		{Name: "stream", Sites: []string{"s1"}}, {Name: "web", Sites: []string{"s1", "s2"}}, {Name: "old", Sites: []string{"s2"}}}}
	z := c.start(specZ)
	waitMesh(t, 20*time.Second, x, y, z)
	waitServedBy(t, 10*time.Second, z.Imports["web"], "x")
	// A connection through the import "old" that the reload removes: it
	// must go on working; its listener must close.
	oldConn, oldBR, oldName, err := foDial(z.Imports["old"], 30*time.Second)
	if err != nil || oldName != "y" {
		t.Fatalf("import old: %q %v", oldName, err)
	}
	defer oldConn.Close()

	// A transfer through the unchanged import "stream" spans the reloads.
	const size = 24 << 20
	xfer := make(chan error, 1)
	go func() { xfer <- pacedEcho(z.Imports["stream"], size, 64<<10, 25*time.Millisecond, 60*time.Second) }()
	time.Sleep(500 * time.Millisecond)

	// 1. An invalid file: a line the test knows is wrong.
	good := c.configYAML(z, specZ)
	badLine := strings.Count(good, "\n") + 1
	if err := os.WriteFile(z.Config, []byte(good+"colour: blue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runMeshd(t, 20*time.Second, "reload", "--config", z.Config)
	t.Logf("invalid reload: exit %d, stderr %s", code, strings.TrimSpace(errOut))
	if code == 0 || !oneLine(errOut) || out != "" {
		t.Errorf("invalid reload: exit %d, stdout %q, stderr %q; want non-zero and one line", code, out, errOut)
	}
	if want := fmt.Sprintf("%s:%d: colour: unknown key", z.Config, badLine); !strings.Contains(errOut, want) {
		t.Errorf("invalid reload: stderr %q does not contain %q", errOut, want)
	}
	// 2. A restart-only key.
	specZsite := specZ
	specZsite.Site = "s9"
	c.writeConfig(z, specZsite, "")
	siteLine := 0
	if b, err := os.ReadFile(z.Config); err == nil {
		for i, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "site: ") {
				siteLine = i + 1
			}
		}
	}
	_, errOut, code = runMeshd(t, 20*time.Second, "reload", "--config", z.Config)
	t.Logf("site change: exit %d, stderr %s", code, strings.TrimSpace(errOut))
	if want := fmt.Sprintf("%s:%d: site: changed from \"s3\" to \"s9\"", z.Config, siteLine); code == 0 || !oneLine(errOut) || siteLine == 0 || !strings.Contains(errOut, want) {
		t.Errorf("site change: exit %d, stderr %q; want non-zero, one line with %q", code, errOut, want)
	}
	// Nothing changed: same imports, same preference.
	if st := status(t, z); len(st.Imports) != 3 || st.Node.Site != "s3" {
		t.Errorf("after refused reloads: site %s, imports %+v", st.Node.Site, st.Imports)
	}
	if got, err := servedBy(z.Imports["web"]); err != nil || got != "x" {
		t.Errorf("after refused reloads web served by %q (%v); want x", got, err)
	}

	// 3. A valid reload on x by SIGHUP: a new export.
	specX.Exports = append(specX.Exports, exportSpec{Name: "extra", Target: extraX.Addr()})
	c.writeConfig(x, specX, "")
	x.signal(t, syscall.SIGHUP)
	// 4. And on z by `meshd reload`: web prefers s2 now, and a new import.
	specZ.Imports = []importSpec{{Name: "stream", Sites: []string{"s1"}}, {Name: "web", Sites: []string{"s2", "s1"}}, {Name: "extra"}}
	oldAddr := z.Imports["old"]
	c.writeConfig(z, specZ, "")
	t0 := time.Now()
	out, errOut, code = runMeshd(t, 20*time.Second, "reload", "--config", z.Config)
	if code != 0 {
		t.Fatalf("reload: exit %d: %s", code, errOut)
	}
	t.Logf("reload: %s", strings.TrimSpace(out))
	for _, want := range []string{"import web changed", "import extra added", "import old removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("meshd reload printed %q; want it to list %q", out, want)
		}
	}
	if got, err := servedBy(z.Imports["web"]); err != nil || got != "y" {
		t.Errorf("right after the reload web served by %q (%v); want y (sites [s2, s1])", got, err)
	}
	waitServedBy(t, 10*time.Second, z.Imports["extra"], "x-extra")
	t.Logf("new import served by x's new export %s after the reload", time.Since(t0).Round(time.Millisecond))
	// Both reloads (x's export, z's imports) have applied: the transfer
	// must still be under way, or it did not span them.
	select {
	case err := <-xfer:
		t.Fatalf("the transfer through the unchanged import ended before the reloads applied (%v): make it longer", err)
	default:
	}

	if cn, err := net.DialTimeout("tcp", oldAddr, time.Second); err == nil {
		cn.Close()
		t.Errorf("the removed import still accepts on %s", oldAddr)
	}
	if err := foRoundTrip(oldConn, oldBR, []byte("still there after the reload")); err != nil {
		t.Errorf("a connection through the removed import broke: %v", err)
	} else if err := foFinish(oldConn, oldBR); err != nil {
		t.Errorf("a connection through the removed import did not finish cleanly: %v", err)
	}
	if err := <-xfer; err != nil {
		t.Errorf("transfer through the unchanged import across the reloads: %v", err)
	}
	st := status(t, z)
	for _, im := range st.Imports {
		if im.Name == "stream" && im.Failed != 0 {
			t.Errorf("import stream: %d failed connections", im.Failed)
		}
	}
	if len(st.Imports) != 3 {
		t.Errorf("z imports after reload: %+v; want stream, web, extra", st.Imports)
	}
	for _, n := range []*meshNode{x, z} {
		if !n.running() {
			t.Fatalf("%s exited", n.Name)
		}
		if countLines(n.logText(), "config reloaded") != 1 {
			t.Errorf("%s logged %d 'config reloaded' lines; want 1", n.Name, countLines(n.logText(), "config reloaded"))
		}
	}
	if !strings.Contains(z.logText(), "reload refused") && countLines(z.logText(), "level=ERROR") > 0 {
		t.Logf("z errors:\n%s", grepLines(z.logText(), "level=ERROR"))
	}
}

// TestMaint (issue #12 problem 10, README "Operations"): `meshd maint on` moves an
// importer's new connections to another site with 0 failed, status shows
// it, it survives a reload, and `off` brings the connections back.
func TestMaint(t *testing.T) {
	c := newCluster(t)
	webX, webY := startFOBackend(t, "x"), startFOBackend(t, "y")
	// x imports web too: in maintenance it keeps its imports, which must
	// then skip its own withdrawn endpoint.
	specX := nodeSpec{Name: "x", Site: "s1", Exports: []exportSpec{{Name: "web", Target: webX.Addr()}},
		Imports: []importSpec{{Name: "web", Sites: []string{"s1", "s2"}}}}
	x := c.start(specX)
	y := c.start(nodeSpec{Name: "y", Site: "s2", Exports: []exportSpec{{Name: "web", Target: webY.Addr()}}})
	z := c.start(nodeSpec{Name: "z", Site: "s3", Imports: []importSpec{{Name: "web", Sites: []string{"s1", "s2"}}}})
	waitMesh(t, 20*time.Second, x, y, z)
	waitServedBy(t, 10*time.Second, z.Imports["web"], "x")

	// A connection open on x when maintenance begins must finish normally.
	held, heldBR, heldName, err := foDial(z.Imports["web"], 30*time.Second)
	if err != nil || heldName != "x" {
		t.Fatalf("held connection: %q %v", heldName, err)
	}
	defer held.Close()
	cl := startFOClient(t, z.Imports["web"])
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	out, errOut, code := runMeshd(t, 10*time.Second, "maint", "on", "--reason", "kernel upgrade", "--config", x.Config)
	if code != 0 {
		t.Fatalf("maint on: exit %d: %s", code, errOut)
	}
	t.Logf("maint on: %s", strings.TrimSpace(out))
	moved := cl.waitFirst(t, t0, foIn("y"), 5*time.Second, "a connection served by y after maint on")
	t.Logf("first connection served by y %s after maint on", moved.Round(time.Millisecond))
	if moved > 1500*time.Millisecond {
		t.Errorf("maint on: new connections moved after %s; want within ~1 s", moved)
	}
	// Withdrawn mesh-wide (README "Operations": within 1 s): z's catalog has no
	// healthy x endpoint for web. `meshd status` itself takes a while
	// here, so the bound has some slack.
	waitFor(t, 3*time.Second, "x's export withdrawn in z's catalog", func() (bool, string) {
		s, _ := service(status(t, z), "web")
		for _, e := range s.Endpoints {
			if e.Node == "x" && e.Healthy {
				return false, fmt.Sprintf("%+v", s.Endpoints)
			}
		}
		return true, ""
	})
	if d := time.Since(t0); d > 1500*time.Millisecond {
		t.Errorf("x's export withdrawn in z's catalog %s after maint on; want within ~1 s", d.Round(time.Millisecond))
	} else {
		t.Logf("x's export withdrawn in z's catalog within %s of maint on", d.Round(time.Millisecond))
	}
	st := status(t, x)
	if !st.Node.Maintenance || st.Node.MaintenanceReason != "kernel upgrade" {
		t.Errorf("x status node: maintenance %v reason %q; want true, kernel upgrade", st.Node.Maintenance, st.Node.MaintenanceReason)
	}
	if got, err := servedBy(x.Imports["web"]); err != nil || got != "y" {
		t.Errorf("x's own import in maintenance served by %q (%v); want y (x keeps its imports, its own export is withdrawn)", got, err)
	}
	if err := foRoundTrip(held, heldBR, []byte("during maintenance")); err != nil {
		t.Errorf("a connection active when maintenance began broke: %v", err)
	} else if err := foFinish(held, heldBR); err != nil {
		t.Errorf("a connection active when maintenance began did not finish cleanly: %v", err)
	}
	// It survives a reload.
	if _, errOut, code := runMeshd(t, 20*time.Second, "reload", "--config", x.Config); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, errOut)
	}
	time.Sleep(time.Second)
	if st := status(t, x); !st.Node.Maintenance {
		t.Errorf("maintenance off after a reload")
	}
	steady := time.Now()
	time.Sleep(500 * time.Millisecond)
	if r, ok := cl.first(steady, foIn("x")); ok {
		t.Errorf("connection %d served by x during maintenance", r.ID)
	}

	t1 := time.Now()
	if _, errOut, code := runMeshd(t, 10*time.Second, "maint", "off", "--config", x.Config); code != 0 {
		t.Fatalf("maint off: exit %d: %s", code, errOut)
	}
	back := cl.waitFirst(t, t1, foIn("x"), 5*time.Second, "a connection served by x after maint off")
	t.Logf("back on x %s after maint off", back.Round(time.Millisecond))
	cl.Stop()
	t.Logf("client: %s", cl.summary(t0, time.Time{}))
	cl.checkNoFailures(t, "maint on/off", t0)
	if st := status(t, x); st.Node.Maintenance {
		t.Errorf("maintenance still on after off")
	}
	if _, errOut, code := runMeshd(t, 10*time.Second, "maint", "sideways", "--config", x.Config); code != 2 || !oneLine(errOut) {
		t.Errorf("maint sideways: exit %d, stderr %q; want 2 and one line", code, errOut)
	}
	// Issue #12 problem 6: a drill of the drilling node's own site is refused.
	if _, errOut, code := runMeshd(t, 10*time.Second, "drill", "--site", "s3", "--config", z.Config); code != 2 || !oneLine(errOut) || !strings.Contains(errOut, "own site") {
		t.Errorf("drill of the own site: exit %d, stderr %q; want 2 and one line", code, errOut)
	}
}

// TestSeedRestart (issue #12 problem 1, README "Operations"): the first node, with an
// empty cluster.join, is restarted gracefully (in maintenance, which a
// restart ends); it rejoins the members it remembers within 10 s and its
// export is served again.
func TestSeedRestart(t *testing.T) {
	c := newCluster(t)
	web := startFOBackend(t, "seed")
	seedSpec := nodeSpec{Name: "seed", Site: "s1", Join: []string{}, Exports: []exportSpec{{Name: "web", Target: web.Addr()}}}
	seed := c.start(seedSpec)
	a := c.start(nodeSpec{Name: "a", Site: "s2"})
	b := c.start(nodeSpec{Name: "b", Site: "s2", Imports: []importSpec{{Name: "web"}}})
	waitMesh(t, 20*time.Second, seed, a, b)
	waitServedBy(t, 10*time.Second, b.Imports["web"], "seed")
	if !strings.Contains(seed.logText(), "this node is alone until another node joins it") {
		t.Errorf("the seed's first start did not log that it is alone")
	}
	// members.json is written a moment after the mesh formed.
	waitFor(t, 10*time.Second, "the seed to remember a and b", func() (bool, string) {
		b, err := os.ReadFile(seed.Dir + "/members.json")
		return err == nil && strings.Contains(string(b), `"a"`) && strings.Contains(string(b), `"b"`), string(b)
	})

	// Maintenance does not survive a restart (SPEC §10): the restarted
	// seed must serve its export again below.
	if _, errOut, code := runMeshd(t, 10*time.Second, "maint", "on", "--config", seed.Config); code != 0 {
		t.Fatalf("maint on: exit %d: %s", code, errOut)
	}
	seed.signal(t, syscall.SIGTERM)
	if code := seed.waitExit(t, 20*time.Second); code != 0 {
		t.Fatalf("seed exit %d after SIGTERM", code)
	}
	waitFor(t, 10*time.Second, "b to see the seed left", func() (bool, string) {
		p, _ := peer(status(t, b), "seed")
		return p.State == "left", p.State
	})
	t0 := time.Now()
	seed.restart(t)
	waitFor(t, 10*time.Second, "a and b to see the restarted seed alive", func() (bool, string) {
		for _, n := range []*meshNode{a, b} {
			st, err := tryStatus(t, n)
			if err != nil {
				return false, err.Error()
			}
			if p, _ := peer(st, "seed"); p.State != "alive" {
				return false, n.Name + " sees seed " + p.State
			}
		}
		return true, ""
	})
	waitServedBy(t, 10*time.Second-time.Since(t0), b.Imports["web"], "seed")
	if st := status(t, seed); st.Node.Maintenance {
		t.Errorf("the restarted seed is still in maintenance")
	}
	t.Logf("seed rejoined and serves again %s after its restart", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(seed.logText(), "rejoined a remembered member") {
		t.Errorf("the restarted seed did not log its rejoin")
	}
}

// TestNameConflict (issue #12 problem 4, README "Operations"): a second node with the
// name of a live member exits non-zero at start with a clear error, and
// the first is not disturbed.
func TestNameConflict(t *testing.T) {
	c := newCluster(t)
	web := startFOBackend(t, "a")
	a := c.start(nodeSpec{Name: "a", Site: "s1", Exports: []exportSpec{{Name: "web", Target: web.Addr()}}})
	b := c.start(nodeSpec{Name: "b", Site: "s2", Imports: []importSpec{{Name: "web"}}})
	waitMesh(t, 20*time.Second, a, b)
	waitServedBy(t, 10*time.Second, b.Imports["web"], "a")
	pubA := status(t, a).Node.PublicKey

	cl := startFOClient(t, b.Imports["web"])
	t0 := time.Now()
	dup := c.start(nodeSpec{Name: "a-dup", Site: "s1", Join: []string{addr(b.GossipPort)}, Flags: []string{"--name", "a"},
		Exports: []exportSpec{{Name: "other", Target: web.Addr()}}})
	code := dup.waitExit(t, 15*time.Second)
	t.Logf("duplicate exited %d after %s", code, time.Since(t0).Round(time.Millisecond))
	if code == 0 {
		t.Errorf("a second node named a exited 0")
	}
	if !strings.Contains(dup.logText(), `another live node already has the name "a"`) {
		t.Errorf("the duplicate's log does not say why it stopped:\n%s", tail(dup.LogPath, 10))
	}
	time.Sleep(2 * time.Second)
	cl.Stop()
	t.Logf("client through b: %s", cl.summary(t0, time.Time{}))
	cl.checkNoFailures(t, "while a duplicate of a started and stopped", t0)
	st := status(t, b)
	p, _ := peer(st, "a")
	if p.State != "alive" || p.PublicKey != pubA || !p.Up {
		t.Errorf("b sees a as %+v; want alive and up with a's key", p)
	}
	s, _ := service(st, "other")
	if len(s.Endpoints) != 0 {
		t.Errorf("the duplicate's export reached b's catalog: %+v", s)
	}
	if r, ok := cl.first(t0, func(n string) bool { return n != "a" }); ok {
		t.Errorf("connection %d served by %q", r.ID, r.Node)
	}
}

// TestImportWaitsAndLogs (issue #12 problems 3, 5 and 7): an export without
// a check block is health-checked (2s/1s) and withdrawn when its backend
// dies, while one with check: false is not; a connection that arrives
// before any node exports the service waits (connect_timeout) and is served
// once one does; a service nobody exports is logged once as such; logs name
// peers by node name and print no empty relay.
func TestImportWaitsAndLogs(t *testing.T) {
	c := newCluster(t)
	webX, webY := startFOBackend(t, "x"), startFOBackend(t, "y")
	// z logs at debug level: its tunnel lines (session up, ...) are checked
	// for peer names below.
	z := c.start(nodeSpec{Name: "z", Site: "s3", Join: []string{}, Flags: []string{"--log-level", "debug"}, Imports: []importSpec{
		{Name: "web", Sites: []string{"s1", "s2"}},
		{Name: "ghost", ConnectTimeout: 300 * time.Millisecond},
		{Name: "unchecked"}}})
	waitUp(t, z, 15*time.Second)

	// A client before anyone exports web: it waits instead of being closed.
	early := make(chan error, 1)
	go func() {
		name, _, err := foExchange(z.Imports["web"], 1, 10*time.Second)
		if err == nil && name != "x" {
			err = fmt.Errorf("served by %q, want x", name)
		}
		early <- err
	}()
	time.Sleep(500 * time.Millisecond)
	x := c.start(nodeSpec{Name: "x", Site: "s1", Join: []string{addr(z.GossipPort)}, Exports: []exportSpec{
		{Name: "web", Target: webX.Addr()}, {Name: "unchecked", Target: webX.Addr(), NoCheck: true}}})
	if err := <-early; err != nil {
		t.Errorf("a connection made before web was exported: %v", err)
	}
	y := c.start(nodeSpec{Name: "y", Site: "s2", Join: []string{addr(z.GossipPort)}, Exports: []exportSpec{{Name: "web", Target: webY.Addr()}}})
	waitMesh(t, 20*time.Second, x, y, z)

	// ghost: nobody exports it. Each connection is closed after its
	// connect_timeout; the log says so once.
	for i := 0; i < 3; i++ {
		start := time.Now()
		cn, err := net.DialTimeout("tcp", z.Imports["ghost"], 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cn.SetDeadline(time.Now().Add(5 * time.Second))
		k, err := cn.Read(make([]byte, 1))
		cn.Close()
		took := time.Since(start)
		if k != 0 || err == nil || took < 250*time.Millisecond || took > 2*time.Second {
			t.Errorf("ghost connection %d: read %d, %v after %s; want closed after ~300ms", i, k, err, took)
		}
	}
	if n := countLines(z.logText(), `no node exports \"ghost\"`); n != 1 {
		t.Errorf("%d lines say no node exports ghost; want 1:\n%s", n, grepLines(z.logText(), "ghost"))
	}

	// The default check withdraws web on x when its backend dies; with
	// check: false, unchecked stays in the catalog.
	waitServedBy(t, 10*time.Second, z.Imports["web"], "x")
	cl := startFOClient(t, z.Imports["web"])
	t0 := time.Now()
	webX.Close()
	waitFor(t, 5*time.Second, "x's web withdrawn as unhealthy", func() (bool, string) {
		s, _ := service(status(t, z), "web")
		for _, e := range s.Endpoints {
			if e.Node == "x" && e.Healthy {
				return false, fmt.Sprintf("%+v", s.Endpoints)
			}
		}
		return true, ""
	})
	t.Logf("x's web withdrawn %s after its backend died", time.Since(t0).Round(time.Millisecond))
	cl.waitOK(t, time.Now(), 5, foIn("y"), 5*time.Second, "connections served by y")
	cl.Stop()
	cl.checkNoFailures(t, "backend of x dead", t0)
	s, _ := service(status(t, z), "unchecked")
	if len(s.Endpoints) != 1 || !s.Endpoints[0].Healthy {
		t.Errorf("unchecked (check: false) in z's catalog: %+v; want healthy", s.Endpoints)
	}

	for _, n := range []*meshNode{x, y, z} {
		log := n.logText()
		if strings.Contains(log, `relay=""`) {
			t.Errorf("%s logs an empty relay:\n%s", n.Name, grepLines(log, `relay=""`))
		}
		sessionLines := 0
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "session up") {
				sessionLines++
			}
			// Every line about a peer (tunnel, path, health, gossip)
			// names it by node name, never by a key prefix.
			if m := peerAttr.FindStringSubmatch(l); m != nil && m[1] != "x" && m[1] != "y" && m[1] != "z" {
				t.Errorf("%s: a line that names a peer %q, not by its node name: %s", n.Name, m[1], l)
			}
		}
		if n == z && sessionLines == 0 {
			t.Errorf("z (debug level) logged no session up line: the peer-name check saw none")
		}
	}
}

// peerAttr finds a log line's peer= attribute.
var peerAttr = regexp.MustCompile(` peer=("[^"]*"|\S+)`)

// proxyBackend reads a PROXY protocol header, answers with the addresses
// it carries ("v2 SRC DST\n"), then echoes.
func startProxyBackend(t *testing.T) *tcpserver.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := tcpserver.Serve(ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(time.Minute))
		br := bufio.NewReader(c)
		v, src, dst, err := proxyproto.Read(br)
		if err != nil {
			fmt.Fprintf(c, "error %v\n", err)
			return
		}
		fmt.Fprintf(c, "%s %s %s\n", v, src, dst)
		io.Copy(c, br)
	})
	t.Cleanup(func() { s.Close() })
	return s
}

// dialFrom connects to address from the local IP src (any port).
func dialFrom(src, address string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", address)
}

// TestPingProxySourceHash (issue #12 problem 8 and README "Commands", README "Configuration reference"): meshd ping
// reports RTT, path and endpoint; a PROXY v2 (and v1) header reaches the
// backend with the client's address and port; balance: source_hash sends
// one client IP to one endpoint while it is healthy and moves it when not.
func TestPingProxySourceHash(t *testing.T) {
	c := newCluster(t)
	pp := startProxyBackend(t)
	bx, by := startFOBackend(t, "x"), startFOBackend(t, "y")
	x := c.start(nodeSpec{Name: "x", Site: "s1", Exports: []exportSpec{
		{Name: "pp2", Target: pp.Addr(), ProxyProtocol: "v2"}, {Name: "pp1", Target: pp.Addr(), ProxyProtocol: "v1"},
		{Name: "sticky", Target: bx.Addr()}}})
	y := c.start(nodeSpec{Name: "y", Site: "s1", Exports: []exportSpec{{Name: "sticky", Target: by.Addr()}}})
	z := c.start(nodeSpec{Name: "z", Site: "s2", Imports: []importSpec{
		{Name: "pp2"}, {Name: "pp1"}, {Name: "sticky", Balance: "source_hash"}}})
	waitMesh(t, 20*time.Second, x, y, z)

	// ping
	out, errOut, code := runMeshd(t, 20*time.Second, "ping", "x", "--count", "3", "--interval", "100ms", "--json", "--config", z.Config)
	if code != 0 {
		t.Fatalf("meshd ping: exit %d: %s", code, errOut)
	}
	var res node.PingResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Sent != 3 || res.Received != 3 || len(res.Replies) != 3 {
		t.Fatalf("ping: %+v", res)
	}
	for _, r := range res.Replies {
		if !r.OK || r.RTTMs <= 0 || r.Path != "direct" || r.Endpoint != addr(x.TunnelPort) || r.Node != "x" {
			t.Errorf("ping reply %+v; want ok, rtt > 0, direct, endpoint %s", r, addr(x.TunnelPort))
		}
	}
	t.Logf("ping x: min/avg/max %.3f/%.3f/%.3f ms", res.MinMs, res.AvgMs, res.MaxMs)
	out, _, code = runMeshd(t, 20*time.Second, "ping", "x", "-n", "1", "--config", z.Config)
	if code != 0 || !strings.Contains(out, "seq=1 rtt=") || !strings.Contains(out, "path=direct") {
		t.Errorf("meshd ping text: exit %d\n%s", code, out)
	}
	if _, errOut, code := runMeshd(t, 20*time.Second, "ping", "nobody", "--config", z.Config); code == 0 || !oneLine(errOut) {
		t.Errorf("ping of an unknown peer: exit %d, %q", code, errOut)
	}

	// PROXY protocol: the backend sees the client's own address and port.
	for _, v := range []string{"v2", "v1"} {
		cn, err := dialFrom("127.0.0.9", z.Imports["pp"+v[1:]])
		if err != nil {
			t.Fatal(err)
		}
		cn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(cn).ReadString('\n')
		want := fmt.Sprintf("%s %s %s\n", v, cn.LocalAddr(), z.Imports["pp"+v[1:]])
		if err != nil || line != want {
			t.Errorf("PROXY %s: backend saw %q (%v); want %q", v, line, err, want)
		}
		cn.Close()
	}

	// source_hash: per client IP always one endpoint.
	byIP := map[string]string{}
	sticky := z.Imports["sticky"]
	for i := 2; i < 22; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		for k := 0; k < 3; k++ {
			cn, err := dialFrom(ip, sticky)
			if err != nil {
				t.Fatal(err)
			}
			cn.SetDeadline(time.Now().Add(10 * time.Second))
			name, err := bufio.NewReader(cn).ReadString('\n')
			cn.Close()
			if err != nil {
				t.Fatalf("%s: %v", ip, err)
			}
			name = strings.TrimSpace(name)
			if prev, ok := byIP[ip]; ok && prev != name {
				t.Errorf("client %s served by %s then %s", ip, prev, name)
			}
			byIP[ip] = name
		}
	}
	t.Logf("source_hash: %v", byIP)
	served := func(ip string) string {
		cn, err := dialFrom(ip, sticky)
		if err != nil {
			return "dial: " + err.Error()
		}
		defer cn.Close()
		cn.SetDeadline(time.Now().Add(10 * time.Second))
		name, err := bufio.NewReader(cn).ReadString('\n')
		if err != nil {
			return "read: " + err.Error()
		}
		return strings.TrimSpace(name)
	}
	onY := 0
	for _, n := range byIP {
		if n == "y" {
			onY++
		}
	}
	if onY == 0 || onY == len(byIP) {
		t.Fatalf("all 20 client IPs on one endpoint: %v", byIP)
	}
	// y unhealthy (maintenance): its clients move to x, x's stay.
	if _, errOut, code := runMeshd(t, 10*time.Second, "maint", "on", "--config", y.Config); code != 0 {
		t.Fatal(errOut)
	}
	waitFor(t, 5*time.Second, "y's clients on x", func() (bool, string) {
		for ip := range byIP {
			if got := served(ip); got != "x" {
				return false, ip + " served by " + got
			}
		}
		return true, ""
	})
	if _, errOut, code := runMeshd(t, 10*time.Second, "maint", "off", "--config", y.Config); code != 0 {
		t.Fatal(errOut)
	}
	waitFor(t, 5*time.Second, "every client back on its endpoint", func() (bool, string) {
		for ip, want := range byIP {
			if got := served(ip); got != want {
				return false, fmt.Sprintf("%s served by %s, want %s", ip, got, want)
			}
		}
		return true, ""
	})
}

// TestCLIBasics (issue #12 problem 8): --version is the first line of
// version; completion scripts; join without --config and unknown commands
// are one line and exit 2; --log-level overrides the file.
func TestCLIBasics(t *testing.T) {
	v, _, code := runMeshd(t, 10*time.Second, "--version")
	full, _, code2 := runMeshd(t, 10*time.Second, "version")
	if code != 0 || code2 != 0 || !oneLine(v) || !strings.HasPrefix(full, v) || !strings.HasPrefix(v, "meshd ") {
		t.Errorf("--version %q (exit %d) is not the first line of version %q (exit %d)", v, code, full, code2)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runMeshd(t, 10*time.Second, "completion", sh)
		if code != 0 || !strings.Contains(out, "reload") || !strings.Contains(out, "maint") {
			t.Errorf("completion %s: exit %d, %s", sh, code, errOut)
		}
	}
	for _, args := range [][]string{{"join"}, {"nosuch"}, {"completion", "tcsh"}, {"ping"}, {"maint"}, {"status", "--bogus"}} {
		out, errOut, code := runMeshd(t, 10*time.Second, args...)
		if code != 2 || !oneLine(errOut) || out != "" {
			t.Errorf("meshd %s: exit %d, stdout %q, stderr %q; want exit 2 and one line", strings.Join(args, " "), code, out, errOut)
		}
	}
	c := newCluster(t)
	n := c.start(nodeSpec{Name: "n1", Site: "s1", Flags: []string{"--log-level", "debug"}})
	waitUp(t, n, 15*time.Second)
	waitFor(t, 5*time.Second, "a debug line", func() (bool, string) {
		return strings.Contains(n.logText(), "level=DEBUG"), ""
	})

	// log.level is applied by a reload (without the flag, which would win).
	m := c.start(nodeSpec{Name: "n2", Site: "s1", Join: []string{addr(n.GossipPort)}})
	waitUp(t, m, 15*time.Second)
	if strings.Contains(m.logText(), "level=DEBUG") {
		t.Fatal("debug lines at level info")
	}
	b, _ := os.ReadFile(m.Config)
	os.WriteFile(m.Config, []byte(strings.Replace(string(b), "level: info", "level: debug", 1)), 0o600)
	m.signal(t, syscall.SIGHUP)
	waitFor(t, 5*time.Second, "n2's log level changed by the reload", func() (bool, string) {
		return strings.Contains(m.logText(), "reload: log level changed\" level=debug"), ""
	})
}
