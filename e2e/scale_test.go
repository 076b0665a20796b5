package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/node"
)

// TestScaleSessionsOnDemand runs 12 nodes in 4 sites (and 2 late ones) (README "Performance", fleet scale): sessions
// exist only where traffic may flow. Site a has two exporters of echo,
// sites b and c one each; b-2 imports echo preferring [a, c] with a warm
// set capped at 2 (a knob), so one of a's exporters is warm and the other
// cold. It checks that
//   - nodes without imports or exports hold no session and nobody holds
//     one with them; the importer holds sessions only with its warm set,
//     and shows the others idle, with no path and no RTT;
//   - a connection balanced to the cold exporter opens a session on demand
//     (no client connection fails), and that session closes after the
//     (short) idle timeout while the warm ones stay;
//   - a drill of site a fails over to the warm candidate in c in < 1 s with
//     0 failed probes and 0 failed client connections;
//   - a node that joins late is usable (a connection through it) within
//     1 s of being alive on the importer.
func TestScaleSessionsOnDemand(t *testing.T) {
	const idleTimeout = 2 * time.Second
	t.Setenv("MESHD_DEBUG_SESSION_IDLE_TIMEOUT", idleTimeout.String())
	t.Setenv("MESHD_DEBUG_WARM_LIMIT", "2")
	m := newFOMesh(t)
	be := map[string]*foBackend{}
	exporter := func(name, site string) *meshNode {
		be[name] = startFOBackend(t, name)
		return m.start(foSpec{Name: name, Site: site, Exports: []foExport{{Name: "echo", Target: be[name].Addr()}}})
	}
	var all []*meshNode
	// d-1 first: the join address, a node with nothing to do.
	idle := []*meshNode{m.start(foSpec{Name: "d-1", Site: "d"})}
	all = append(all, idle[0])
	a1, a2 := exporter("a-1", "a"), exporter("a-2", "a")
	c1 := exporter("c-1", "c")
	b1 := exporter("b-1", "b")
	imp := m.start(foSpec{Name: "b-2", Site: "b", Imports: []foImport{{Name: "echo", Sites: []string{"a", "c"}}}})
	all = append(all, a1, a2, c1, b1, imp)
	for _, name := range []string{"a-3", "b-3", "c-2", "c-3", "d-2"} {
		n := m.start(foSpec{Name: name, Site: name[:1]})
		idle = append(idle, n)
		all = append(all, n)
	}
	waitFor(t, 40*time.Second, "11 nodes alive everywhere", func() (bool, string) {
		for _, n := range all {
			st, err := tryStatus(t, n)
			if err != nil {
				return false, err.Error()
			}
			for _, o := range all {
				if p, ok := peer(st, o.Name); o != n && (!ok || p.State != "alive") {
					return false, fmt.Sprintf("%s sees %s %q", n.Name, o.Name, p.State)
				}
			}
		}
		return true, ""
	})
	// The importer's warm set: one of a's exporters (rendezvous by the
	// importer's name) and c-1.
	// The warm set is final only once b-2's catalog has every exporter
	// healthy (until then it may warm the one a's exporter it knows), and a
	// session of an earlier warm set closes within the idle timeout: so the
	// sessions must also have stayed the same for longer than that.
	var warmA, coldA string
	var lastUp string
	var since time.Time
	waitFor(t, 25*time.Second, "b-2's warm sessions", func() (bool, string) {
		st, err := tryStatus(t, imp)
		if err != nil {
			return false, err.Error()
		}
		if s, _ := service(st, "echo"); len(s.Endpoints) != 4 {
			return false, fmt.Sprintf("echo endpoints %+v, want 4", s.Endpoints)
		} else {
			for _, e := range s.Endpoints {
				if !e.Healthy {
					return false, fmt.Sprintf("echo endpoint %s not healthy yet", e.Node)
				}
			}
		}
		up := map[string]bool{}
		for _, p := range st.Peers {
			if p.Session == node.SessionUp {
				up[p.Name] = true
			}
		}
		if key := fmt.Sprint(up); key != lastUp {
			lastUp, since = key, time.Now()
		}
		if time.Since(since) < idleTimeout+time.Second {
			return false, fmt.Sprintf("sessions up %v, not yet stable for %v", up, idleTimeout+time.Second)
		}
		if len(up) != 2 || !up["c-1"] || up["a-1"] == up["a-2"] || !foSeesUpOK(t, imp, "c-1") {
			return false, fmt.Sprintf("sessions up: %v", up)
		}
		warmA, coldA = "a-1", "a-2"
		if up["a-2"] {
			warmA, coldA = "a-2", "a-1"
		}
		return foSeesUpOK(t, imp, warmA), "warm a exporter not up yet"
	})
	t.Logf("b-2 warms %s and c-1; %s is cold", warmA, coldA)

	// Nothing flows to or from the idle nodes, and the importer shows its
	// cold peers without path or RTT.
	checkSessions := func(what string) {
		t.Helper()
		for _, n := range all {
			st := status(t, n)
			for _, p := range st.Peers {
				isIdle := false
				for _, x := range idle {
					isIdle = isIdle || x.Name == p.Name || x.Name == n.Name
				}
				if isIdle && p.Session != node.SessionIdle {
					t.Errorf("%s: %s sees %s session %q, want idle (no traffic between them)", what, n.Name, p.Name, p.Session)
				}
				if p.Session == node.SessionIdle && (p.Path != node.PathNone || p.RTTMs != nil || p.Streams != 0) {
					t.Errorf("%s: %s sees idle %s with path %q rtt %v streams %d, want none/null/0", what, n.Name, p.Name, p.Path, p.RTT(), p.Streams)
				}
			}
		}
	}
	checkSessions("steady state")
	if p, _ := peer(status(t, imp), coldA); p.Session != node.SessionIdle {
		t.Fatalf("b-2 sees its cold candidate %s session %q, want idle", coldA, p.Session)
	}

	// Connections balance over a's exporters: the cold one gets a session
	// on demand, and no connection fails.
	impAddr := imp.Imports["echo"]
	served := map[string]int{}
	for i := range 8 {
		name, connect, err := foExchange(impAddr, i, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d through b-2: %v", i, err)
		}
		served[name]++
		if name == coldA && served[name] == 1 {
			t.Logf("first connection to the cold %s: connect %s", coldA, connect.Round(time.Microsecond))
		}
	}
	if served[coldA] == 0 || served[warmA] == 0 {
		t.Fatalf("connections served %v: want both of site a's exporters (least_conn spreads them)", served)
	}
	if p, _ := peer(status(t, imp), coldA); p.Session != node.SessionUp || p.Path != node.PathDirect {
		t.Fatalf("after connections to %s: session %q path %q, want up/direct", coldA, p.Session, p.Path)
	}
	// The on-demand session closes after the idle timeout; the warm ones stay.
	closedAt := time.Now()
	waitFor(t, idleTimeout+5*time.Second, "the on-demand session to close as idle", func() (bool, string) {
		p, _ := peer(status(t, imp), coldA)
		return p.Session == node.SessionIdle, "session " + p.Session
	})
	t.Logf("on-demand session to %s idle after %s (timeout %s)", coldA, time.Since(closedAt).Round(100*time.Millisecond), idleTimeout)
	if el := time.Since(closedAt); el < idleTimeout-500*time.Millisecond {
		t.Errorf("session closed %s after the last connection, before the idle timeout %s", el, idleTimeout)
	}
	for _, w := range []string{warmA, "c-1"} {
		if p, _ := peer(status(t, imp), w); p.Session != node.SessionUp {
			t.Errorf("warm %s: session %q after the idle timeout, want up", w, p.Session)
		}
	}
	checkSessions("after the idle close")

	// Drill site a from the importer: the warm c-1 takes over at once.
	cl := startFOClient(t, impAddr)
	t0 := time.Now()
	cl.waitOK(t, t0, 5, func(n string) bool { return strings.HasPrefix(n, "a-") }, 10*time.Second, "client connections served by site a")
	out, errOut, code := runMeshd(t, 60*time.Second, "drill", "--site", "a", "--duration", "3s", "--json", "--config", imp.Config)
	if code != 0 {
		t.Fatalf("meshd drill: exit %d: %s", code, errOut)
	}
	var rep failover.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Services) != 1 {
		t.Fatalf("drill report: %v\n%s", err, out)
	}
	s := rep.Services[0]
	t.Logf("FIGURES scale drill: rto_ms %d failback_ms %d probes %d failed %d %s → %s → %s",
		s.RTOMS, s.FailbackMS, s.Probes, s.Failed, s.Before, s.During, s.After)
	if s.Failed != 0 || s.RTOMS < 0 || s.RTOMS >= 1000 || s.During != "c-1" {
		t.Errorf("drill of site a: rto_ms %d failed %d during %q, want < 1000, 0, c-1", s.RTOMS, s.Failed, s.During)
	}
	cl.Stop()
	cl.checkNoFailures(t, "drill of site a", t0)
	t.Logf("client: %s", cl.summary(t0, time.Time{}))

	// A node that joins late is usable within 1 s of being alive on an
	// importer that was waiting for it.
	lateImp := m.start(foSpec{Name: "d-4", Site: "d", Imports: []foImport{{Name: "late"}}})
	waitFor(t, 20*time.Second, "b-2 to see d-4 alive", func() (bool, string) {
		p, _ := peer(status(t, imp), "d-4")
		return p.State == "alive", p.State
	})
	lateBe := startFOBackend(t, "d-3")
	m.start(foSpec{Name: "d-3", Site: "d", Exports: []foExport{{Name: "late", Target: lateBe.Addr()}}})
	var aliveAt time.Time
	waitFor(t, 20*time.Second, "d-4 to see d-3 alive, exporting late", func() (bool, string) {
		st, err := tryStatus(t, lateImp)
		if err != nil {
			return false, err.Error()
		}
		p, _ := peer(st, "d-3")
		sv, _ := service(st, "late")
		if p.State != "alive" || len(sv.Endpoints) == 0 {
			return false, fmt.Sprintf("d-3 %q, late %+v", p.State, sv.Endpoints)
		}
		aliveAt = time.Now()
		return true, ""
	})
	name, connect, err := foExchange(lateImp.Imports["late"], 0, 5*time.Second)
	usable := time.Since(aliveAt)
	t.Logf("FIGURES scale late node: first connection %s after alive (connect %s)", usable.Round(time.Millisecond), connect.Round(time.Millisecond))
	if err != nil || name != "d-3" {
		t.Fatalf("first connection to the late node: %q %v", name, err)
	}
	if usable > time.Second {
		t.Errorf("late node usable %s after being alive, want within 1 s", usable)
	}
}

// foSeesUpOK is foSeesUp's verdict for one peer, ignoring the service.
func foSeesUpOK(tb testing.TB, obs *meshNode, name string) bool {
	st, err := tryStatus(tb, obs)
	if err != nil {
		return false
	}
	p, ok := peer(st, name)
	return ok && p.State == "alive" && p.Path == node.PathDirect && p.Up && p.RTT() > 0
}
