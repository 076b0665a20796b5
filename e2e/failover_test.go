package e2e

// Site failover in under a second, drills that prove it, zero failed
// client connections: real `meshd join` processes on loopback, a client
// that opens a new connection through edge-1's import every 50 ms, and
// exporters that are frozen (SIGSTOP: a black hole without root), killed,
// drilled and restarted under it. See failover_helpers_test.go for the
// topology and the client.

import (
	"bufio"
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/failover"
)

// Limits the issue sets, with room for a loaded 2-core machine.
const (
	foMaxRecovery = 5 * time.Second
	foMaxFailback = 10 * time.Second
	// foMaxConnect bounds a new connection's connect delay while a healthy
	// endpoint exists: two dead candidates at the 750 ms attempt floor
	// before the healthy one, with room.
	foMaxConnect = 3 * time.Second
)

// TestFailoverSIGSTOP freezes every onprem exporter: new connections must
// go to cloud-1 within foMaxRecovery without a single failure, and back to
// onprem within foMaxFailback of SIGCONT.
func TestFailoverSIGSTOP(t *testing.T) {
	tp := newFOTopo(t, foTopoOpts{})
	cl := startFOClient(t, tp.imp)
	t0 := time.Now()
	cl.waitOK(t, t0, 10, foSiteOnprem, 15*time.Second, "client connections served by onprem")

	const hold = 5 * time.Second
	var stopAt time.Time
	cl.quiesce(func() {
		stopAt = time.Now()
		for _, n := range tp.onprem {
			n.signal(t, syscall.SIGSTOP)
		}
	})
	rto := cl.waitFirst(t, stopAt, foIn("cloud-1"), 2*foMaxRecovery, "cloud-1 after SIGSTOP of onprem")
	t.Logf("SIGSTOP onprem-1, onprem-2: first client connection served by cloud-1 completed %s after the stop", rto.Round(time.Millisecond))
	tp.waitDown(t, hold, "frozen onprem nodes", tp.onprem...)
	time.Sleep(time.Until(stopAt.Add(hold))) // the scenario: frozen for `hold`

	contAt := time.Now()
	for _, n := range tp.onprem {
		n.signal(t, syscall.SIGCONT)
	}
	failback := cl.waitFirst(t, contAt, foSiteOnprem, 2*foMaxFailback, "onprem after SIGCONT")
	t.Logf("SIGCONT after %s: first client connection served by onprem completed %s after it", contAt.Sub(stopAt).Round(time.Millisecond), failback.Round(time.Millisecond))
	cl.waitOK(t, contAt.Add(failback), 10, foSiteOnprem, 15*time.Second, "client connections served by onprem again")
	cl.Stop()

	t.Logf("client before the stop: %s", cl.summary(t0, stopAt))
	t.Logf("client while frozen: %s", cl.summary(stopAt, contAt))
	t.Logf("client from SIGCONT: %s", cl.summary(contAt, time.Time{}))
	t.Logf("FIGURES SIGSTOP: recovery %s, failback %s, failed connections %d",
		rto.Round(time.Millisecond), failback.Round(time.Millisecond), len(cl.failures()))
	tp.checkOutage(t, cl, "SIGSTOP of onprem", "failback", t0, rto, failback)
}

// foDrill runs `meshd drill --site onprem --json` from edge-1 and decodes
// the report.
func foDrill(tb testing.TB, tp *foTopo, d time.Duration) (failover.Report, string) {
	tb.Helper()
	out, errOut, code := runMeshd(tb, d+60*time.Second, "drill", "--site", "onprem", "--duration", d.String(), "--json", "--config", tp.edge.Config)
	if code != 0 {
		tb.Fatalf("meshd drill --json: exit %d: %s", code, errOut)
	}
	var rep failover.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		tb.Fatalf("meshd drill --json: %v\n%s", err, out)
	}
	return rep, out
}

// TestFailoverDrill drills site onprem from edge-1 while the client runs:
// the report and the client agree that nothing failed, and the text form
// is a table and a timeline.
func TestFailoverDrill(t *testing.T) {
	tp := newFOTopo(t, foTopoOpts{})
	cl := startFOClient(t, tp.imp)
	t0 := time.Now()
	cl.waitOK(t, t0, 10, foSiteOnprem, 15*time.Second, "client connections served by onprem")

	const dur = 5 * time.Second
	drillAt := time.Now()
	rep, out := foDrill(t, tp, dur)
	took := time.Since(drillAt)
	t.Logf("drill took %s: %s", took.Round(time.Millisecond), strings.Join(strings.Fields(out), " "))
	onprem := tp.onpremNames()
	if rep.Site != "onprem" || rep.DurationMS < dur.Milliseconds()*9/10 || rep.DurationMS > dur.Milliseconds()*3/2 {
		t.Errorf("report: site %q duration_ms %d, want onprem and about %d", rep.Site, rep.DurationMS, dur.Milliseconds())
	}
	if len(rep.Services) != 1 || rep.Services[0].Name != "echo" {
		t.Fatalf("report services %+v, want just echo", rep.Services)
	}
	s := rep.Services[0]
	t.Logf("FIGURES drill: rto_ms %d, failback_ms %d, probes %d, failed probes %d, %s → %s → %s",
		s.RTOMS, s.FailbackMS, s.Probes, s.Failed, s.Before, s.During, s.After)
	if s.Failed != 0 {
		t.Errorf("report: %d of %d probes failed, want 0", s.Failed, s.Probes)
	}
	if minProbes := int(dur / (100 * time.Millisecond) / 2); s.Probes < minProbes {
		t.Errorf("report: %d probes, want at least %d (one per 100 ms)", s.Probes, minProbes)
	}
	if s.RTOMS < 0 || s.RTOMS > foMaxRecovery.Milliseconds() {
		t.Errorf("report: rto_ms %d, want 0..%d", s.RTOMS, foMaxRecovery.Milliseconds())
	}
	if s.FailbackMS < 0 || s.FailbackMS > foMaxFailback.Milliseconds() {
		t.Errorf("report: failback_ms %d, want 0..%d", s.FailbackMS, foMaxFailback.Milliseconds())
	}
	if !slices.Contains(onprem, s.Before) || s.During != "cloud-1" || !slices.Contains(onprem, s.After) {
		t.Errorf("report: %q → %q → %q, want an onprem node → cloud-1 → an onprem node", s.Before, s.During, s.After)
	}
	if s.Before == "cloud-1" && s.RTOMS == 0 && len(s.Timeline) >= 2 && s.Timeline[0].Node != "cloud-1" &&
		s.Timeline[1].Node == "cloud-1" && s.Timeline[1].AtMS >= -5 && s.Timeline[1].AtMS <= 5 {
		// Explain the failure above: the known report bug, not a failover.
		t.Errorf("the report counts the probe issued at the cut's start (at_ms %d), served by cloud-1 after the cut, as 'before': "+
			"before=cloud-1 and rto_ms=0 although onprem served before the cut (a probe belongs to the phase in which it completed)", s.Timeline[1].AtMS)
	}
	// What the client saw of the same drill (its start is when the order
	// went out, ~500 ms after the command began).
	if d, ok := cl.first(drillAt, foIn("cloud-1")); ok {
		t.Logf("client: first connection served by cloud-1 completed %s after the drill command started", d.End.Sub(drillAt).Round(time.Millisecond))
	} else {
		t.Errorf("no client connection was served by cloud-1 during the drill; client: %s", cl.summary(drillAt, time.Time{}))
	}
	t.Logf("client during the drill: %s", cl.summary(drillAt, drillAt.Add(took)))

	// The text form: a table and a timeline, from a steady state again.
	tp.waitUp(t, 30*time.Second)
	textAt := time.Now()
	out, errOut, code := runMeshd(t, 60*time.Second, "drill", "--site", "onprem", "--duration", "2s", "--config", tp.edge.Config)
	if code != 0 {
		t.Fatalf("meshd drill (text): exit %d: %s", code, errOut)
	}
	t.Logf("text drill took %s:\n%s", time.Since(textAt).Round(time.Millisecond), out)
	for _, w := range []string{"drill of site onprem", "SERVICE", "PROBES", "FAILED", "RTO", "FAILBACK", "black-hole started", "restored", "served", "cloud-1"} {
		if !strings.Contains(out, w) {
			t.Errorf("drill text report lacks %q", w)
		}
	}
	row := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "echo ") {
			row = l
		}
	}
	if f := strings.Fields(row); len(f) < 5 || f[2] != "0" || !strings.Contains(row, "cloud-1") || !strings.Contains(row, "onprem-") {
		t.Errorf("drill text report: want a table row for echo with 0 failed, onprem and cloud-1; got %q", row)
	}
	if strings.Index(out, "black-hole started") > strings.Index(out, "restored") || strings.Index(out, "SERVICE") > strings.Index(out, "black-hole started") {
		t.Errorf("drill text report: want the table, then a timeline with the start before the restore")
	}

	cl.waitOK(t, time.Now(), 5, foSiteOnprem, 15*time.Second, "client connections served by onprem after the drills")
	cl.Stop()
	t.Logf("client during the text drill and after: %s", cl.summary(textAt, time.Time{}))
	cl.checkNoFailures(t, "drills of onprem", t0)
	if f := tp.importFailed(t, "echo"); f != 0 {
		t.Errorf("edge-1's echo import counts %d failed connections, want 0", f)
	}
}

// TestFailoverKill9 kills every onprem exporter: new connections go to
// cloud-1 without failures, and back once they are restarted.
func TestFailoverKill9(t *testing.T) {
	tp := newFOTopo(t, foTopoOpts{})
	cl := startFOClient(t, tp.imp)
	t0 := time.Now()
	cl.waitOK(t, t0, 10, foSiteOnprem, 15*time.Second, "client connections served by onprem")

	var killAt time.Time
	cl.quiesce(func() {
		killAt = time.Now()
		for _, n := range tp.onprem {
			n.signal(t, syscall.SIGKILL)
		}
	})
	for _, n := range tp.onprem {
		if code := n.waitExit(t, 10*time.Second); code != -1 {
			t.Errorf("%s: exit code %d after SIGKILL", n.Name, code)
		}
	}
	rto := cl.waitFirst(t, killAt, foIn("cloud-1"), 2*foMaxRecovery, "cloud-1 after kill -9 of onprem")
	t.Logf("kill -9 onprem-1, onprem-2: first client connection served by cloud-1 completed %s after the kill", rto.Round(time.Millisecond))
	tp.waitDown(t, 5*time.Second, "killed onprem nodes", tp.onprem...)
	time.Sleep(time.Until(killAt.Add(3 * time.Second))) // the scenario: dead for a while

	restartAt := time.Now()
	for _, n := range tp.onprem {
		n.restart(t) // same config, data dir (node key) and ports
	}
	failback := cl.waitFirst(t, restartAt, foSiteOnprem, 3*foMaxFailback, "onprem after the restart")
	t.Logf("restarted %s after the kill: first client connection served by onprem completed %s after the restart",
		restartAt.Sub(killAt).Round(time.Millisecond), failback.Round(time.Millisecond))
	waitFor(t, 30*time.Second, "edge-1 to see the restarted nodes up", func() (bool, string) {
		return foSeesUp(t, tp.edge, "echo", tp.onpremNames()...)
	})
	for _, n := range tp.onprem {
		cl.waitOK(t, restartAt, 3, foIn(n.Name), 15*time.Second, "client connections served by the restarted "+n.Name)
	}
	cl.Stop()

	t.Logf("client while killed: %s", cl.summary(killAt, restartAt))
	t.Logf("client from the restart: %s", cl.summary(restartAt, time.Time{}))
	t.Logf("FIGURES kill -9: recovery %s, failback after restart %s, failed connections %d",
		rto.Round(time.Millisecond), failback.Round(time.Millisecond), len(cl.failures()))
	tp.checkOutage(t, cl, "kill -9 of onprem", "failback after the restart", t0, rto, failback)
}

// foSlowOn opens a connection through imp that is served by want (other
// connections it gets meanwhile stay open until then, so that least_conn
// moves on to want).
func foSlowOn(t *testing.T, imp, want string) (net.Conn, *bufio.Reader) {
	t.Helper()
	var others []net.Conn
	defer func() {
		for _, c := range others {
			c.Close()
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		cn, br, name, err := foDial(imp, 30*time.Second)
		if err != nil {
			t.Fatalf("slow connection via %s: %v", imp, err)
		}
		if name == want {
			return cn, br
		}
		others = append(others, cn)
	}
	t.Fatalf("no connection via %s was served by %s within 15s", imp, want)
	return nil, nil
}

// TestRollingRestart restarts every exporter in turn with SIGTERM while
// clients run: no client connection fails, and a slow connection open on
// the node being stopped completes within the drain grace.
func TestRollingRestart(t *testing.T) {
	tp := newFOTopo(t, foTopoOpts{cloudPref: true})
	cl := startFOClient(t, tp.imp)       // prefers onprem
	clc := startFOClient(t, tp.impCloud) // prefers cloud
	t0 := time.Now()
	cl.waitOK(t, t0, 5, foSiteOnprem, 15*time.Second, "echo connections served by onprem")
	clc.waitOK(t, t0, 5, foIn("cloud-1"), 15*time.Second, "echo-cloud connections served by cloud-1")

	for _, x := range tp.exporters() {
		imp, c := tp.imp, cl
		if x == tp.cloud {
			imp, c = tp.impCloud, clc
		}
		// A slow exchange on x: 10 rounds 200 ms apart, the first before
		// the SIGTERM.
		cn, br := foSlowOn(t, imp, x.Name)
		payload := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 1024) }
		if err := foRoundTrip(cn, br, payload(0)); err != nil {
			t.Fatalf("slow connection on %s, round 0: %v", x.Name, err)
		}
		type result struct {
			err error
			end time.Time
		}
		res := make(chan result, 1)
		go func() {
			defer cn.Close()
			for i := 1; i < 10; i++ {
				time.Sleep(200 * time.Millisecond) // the exchange is slow on purpose
				if err := foRoundTrip(cn, br, payload(i)); err != nil {
					res <- result{fmt.Errorf("round %d: %w", i, err), time.Now()}
					return
				}
			}
			res <- result{foFinish(cn, br), time.Now()}
		}()

		termAt := time.Now()
		x.signal(t, syscall.SIGTERM)
		var r result
		select {
		case r = <-res:
		case <-time.After(foDrainGrace + 15*time.Second):
			t.Fatalf("slow connection on %s did not end within %s of SIGTERM", x.Name, foDrainGrace+15*time.Second)
		}
		if r.err != nil {
			t.Errorf("slow connection on %s broke while it drained: %v", x.Name, r.err)
		} else if d := r.end.Sub(termAt); d > foDrainGrace {
			t.Errorf("slow connection on %s completed %s after SIGTERM, want within the drain grace %s", x.Name, d, foDrainGrace)
		}
		if code := x.waitExit(t, foDrainGrace+15*time.Second); code != 0 {
			t.Errorf("%s: exit code %d after SIGTERM, want 0\n%s", x.Name, code, tail(x.LogPath, 20))
		}
		exitAt := time.Now()

		x.restart(t)
		waitFor(t, 30*time.Second, "edge-1 to see the restarted "+x.Name+" up", func() (bool, string) {
			if !x.running() {
				t.Fatalf("%s exited: %v\n%s", x.Name, x.exitErr(), tail(x.LogPath, 20))
			}
			return foSeesUp(t, tp.edge, "echo", x.Name)
		})
		upAt := time.Now()
		back := c.waitFirst(t, upAt, foIn(x.Name), 15*time.Second, "the restarted "+x.Name)
		t.Logf("%s: slow connection done %s after SIGTERM, exit 0 after %s, up again at edge-1 %s after the restart, first client connection %s later",
			x.Name, r.end.Sub(termAt).Round(time.Millisecond), exitAt.Sub(termAt).Round(time.Millisecond),
			upAt.Sub(exitAt).Round(time.Millisecond), back.Round(time.Millisecond))
	}
	cl.Stop()
	clc.Stop()
	t.Logf("echo client: %s", cl.summary(t0, time.Time{}))
	t.Logf("echo-cloud client: %s", clc.summary(t0, time.Time{}))
	cl.checkNoFailures(t, "rolling restart (echo)", t0)
	clc.checkNoFailures(t, "rolling restart (echo-cloud)", t0)
	cl.checkConnectDelay(t, "rolling restart (echo)", t0, foMaxConnect)
	clc.checkConnectDelay(t, "rolling restart (echo-cloud)", t0, foMaxConnect)
	for _, im := range []string{"echo", "echo-cloud"} {
		if f := tp.importFailed(t, im); f != 0 {
			t.Errorf("edge-1's %s import counts %d failed connections, want 0", im, f)
		}
	}
}

// foHashCounter hashes and counts what is written to it.
type foHashCounter struct {
	h hash.Hash
	n atomic.Int64
}

func (w *foHashCounter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// TestEstablishedStreamSurvivesFreeze freezes the exporter of an open
// connection for less than the session timeout: edge-1 marks it down for
// new connections, but the connection goes on, and a checksummed transfer
// started before the freeze completes intact.
func TestEstablishedStreamSurvivesFreeze(t *testing.T) {
	tp := newFOTopo(t, foTopoOpts{onprem: 1})
	o1 := tp.onprem[0]
	cl := startFOClient(t, tp.imp)
	t0 := time.Now()
	cl.waitOK(t, t0, 5, foIn(o1.Name), 15*time.Second, "client connections served by onprem-1")

	cn, br, name, err := foDial(tp.imp, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	if name != o1.Name {
		t.Fatalf("connection served by %s, want %s", name, o1.Name)
	}

	// Writer: 16 KiB of random data every 10 ms until told to stop, then
	// half-close. Reader: hashes the echo to EOF.
	sent := &foHashCounter{h: sha256.New()}
	got := &foHashCounter{h: sha256.New()}
	stopWriting := make(chan struct{})
	werr := make(chan error, 1)
	go func() {
		var seed [32]byte
		crand.Read(seed[:])
		src := rand.NewChaCha8(seed)
		buf := make([]byte, 16<<10)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopWriting:
				werr <- cn.(*net.TCPConn).CloseWrite()
				return
			case <-tick.C:
			}
			src.Read(buf)
			k, err := cn.Write(buf)
			sent.Write(buf[:k])
			if err != nil {
				werr <- fmt.Errorf("write after %d bytes: %w", sent.n.Load(), err)
				return
			}
		}
	}()
	rerr := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(got, br, make([]byte, 64<<10))
		rerr <- err
	}()
	waitBytes := func(n int64, d time.Duration, what string) {
		t.Helper()
		waitFor(t, d, what, func() (bool, string) {
			select {
			case err := <-rerr:
				t.Fatalf("transfer: read ended after %d bytes: %v", got.n.Load(), err)
			case err := <-werr:
				t.Fatalf("transfer: %v", err)
			default:
			}
			return got.n.Load() >= n, fmt.Sprintf("%d bytes echoed", got.n.Load())
		})
	}
	waitBytes(256<<10, 10*time.Second, "the transfer to flow before the freeze")

	const freeze = 3 * time.Second
	var stopAt time.Time
	cl.quiesce(func() {
		stopAt = time.Now()
		o1.signal(t, syscall.SIGSTOP)
	})
	atStop := got.n.Load()
	tp.waitDown(t, freeze-500*time.Millisecond, "frozen onprem-1", o1)
	rto := cl.waitFirst(t, stopAt, foIn("cloud-1"), time.Until(stopAt.Add(freeze)), "cloud-1 while onprem-1 is frozen")
	time.Sleep(time.Until(stopAt.Add(freeze))) // the scenario: frozen for `freeze`
	atCont := got.n.Load()
	contAt := time.Now()
	o1.signal(t, syscall.SIGCONT)
	waitBytes(atCont+256<<10, 20*time.Second, "the transfer to go on after SIGCONT")
	resumed := time.Since(contAt)
	if !o1.running() {
		t.Fatalf("%s exited", o1.Name)
	}

	close(stopWriting)
	select {
	case err := <-werr:
		if err != nil {
			t.Fatalf("transfer: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("transfer: the writer did not finish")
	}
	select {
	case err := <-rerr:
		if err != nil {
			t.Fatalf("transfer: read to EOF: %v after %d of %d bytes", err, got.n.Load(), sent.n.Load())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("transfer: no EOF within 30s (%d of %d bytes echoed)", got.n.Load(), sent.n.Load())
	}
	if got.n.Load() != sent.n.Load() || !bytes.Equal(got.h.Sum(nil), sent.h.Sum(nil)) {
		t.Errorf("transfer: echoed %d bytes (sha256 %x), sent %d (sha256 %x)",
			got.n.Load(), got.h.Sum(nil), sent.n.Load(), sent.h.Sum(nil))
	}
	failback := cl.waitFirst(t, contAt, foIn(o1.Name), 2*foMaxFailback, "onprem-1 after SIGCONT")
	cl.Stop()
	t.Logf("FIGURES freeze: %d bytes echoed before the freeze, %d during it (buffers), transfer resumed %s after SIGCONT, %d bytes in all, intact; new connections: cloud-1 after %s, onprem-1 again %s after SIGCONT",
		atStop, atCont-atStop, resumed.Round(time.Millisecond), got.n.Load(), rto.Round(time.Millisecond), failback.Round(time.Millisecond))
	t.Logf("client: %s", cl.summary(t0, time.Time{}))
	cl.checkNoFailures(t, "freeze of onprem-1", t0)
	cl.checkConnectDelay(t, "freeze of onprem-1", t0, foMaxConnect)
}
