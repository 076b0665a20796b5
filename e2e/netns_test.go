//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/node"
)

// netnsSite is one site of TestNetns: its own namespace, joined to the
// core namespace by a veth pair (site 10.99.<octet>.2/24, core .1): a
// lab.Topo star, whose i-th host is at octet i.
type netnsSite struct {
	role  string // site name and namespace suffix
	node  string // the meshd node in it
	octet int
	ns    string
}

func (s netnsSite) ip() string { return fmt.Sprintf("10.99.%d.2", s.octet) }

// TestNetns runs three sites in their own network namespaces, routed by a
// core namespace, and cuts all traffic between the onprem site and the
// others with nftables in the core for 10 s, then restores it. New
// connections from the edge through its import fail over to the cloud
// with no failed connection, fail back to onprem after the restore, and
// membership reconverges, with no process restarted.
//
// Topology (nothing in the root namespace but the test process):
//
//	onprem 10.99.1.2 ─┐
//	cloud  10.99.2.2 ─┼─ core (10.99.{1,2,3}.1, forwarding; the cut)
//	edge   10.99.3.2 ─┘
func TestNetns(t *testing.T) {
	netnsSkipUnlessPossible(t)
	removeStale(t, staleNetns)

	prefix := fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid())
	sites := []netnsSite{
		{role: "onprem", node: "onprem-1", octet: 1},
		{role: "cloud", node: "cloud-1", octet: 2},
		{role: "edge", node: "edge-1", octet: 3},
	}
	core := prefix + "core"
	for i := range sites {
		sites[i].ns = prefix + sites[i].role
	}
	onprem, cloud, edge := sites[0], sites[1], sites[2]

	// ---- topology
	ctx := context.Background()
	tp := newNetnsTopo(t)
	hosts, err := tp.Star(ctx, core, "10.99", onprem.ns, cloud.ns, edge.ns)
	tp.must(err)
	for i, h := range hosts {
		if h.IP != sites[i].ip() {
			t.Fatalf("site %s at %s, want %s", sites[i].role, h.IP, sites[i].ip())
		}
	}
	cutRules := fmt.Sprintf(`table inet me2e_cut {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ip saddr 10.99.%[1]d.0/24 drop
		ip daddr 10.99.%[1]d.0/24 drop
	}
}
`, onprem.octet)
	if err := tp.CheckNft(ctx, core, cutRules); err != nil {
		t.Skipf("network-namespace test: nftables not usable here (kernel without nf_tables?): %v", err)
	}

	// ---- backends and nodes
	const echoAddr = "127.0.0.1:7000" // each site's own loopback
	startNetnsEcho(t, onprem.ns, echoAddr, onprem.node)
	startNetnsEcho(t, cloud.ns, echoAddr, cloud.node)

	c := newCluster(t)
	logLevel := "info" // MESHD_E2E_NETNS_LOG_LEVEL=debug to diagnose
	if l := os.Getenv("MESHD_E2E_NETNS_LOG_LEVEL"); l != "" {
		logLevel = l
	}
	importAddr := edge.ip() + ":15000"
	gossipAddr := func(s netnsSite) string { return s.ip() + ":7946" }
	mk := func(s netnsSite, join []netnsSite, exports []lab.Export, imports []lab.Import) *meshNode {
		var js []string
		for _, j := range join {
			js = append(js, gossipAddr(j))
		}
		n, cfg := c.netnsNode(s.node, s.role, s.ip(), js)
		cfg.Exports, cfg.Imports, cfg.LogLevel = exports, imports, logLevel
		startInNetns(t, c, s.ns, n, cfg)
		return n
	}
	exportEcho := []lab.Export{{Name: "echo", Target: echoAddr}}
	o1 := mk(onprem, nil, exportEcho, nil)
	waitUp(t, o1, 20*time.Second)
	c1 := mk(cloud, []netnsSite{onprem}, exportEcho, nil)
	e1 := mk(edge, []netnsSite{onprem, cloud}, nil,
		[]lab.Import{{Name: "echo", Listen: importAddr, Sites: []string{"onprem", "cloud"}}})
	nodes := []*meshNode{o1, c1, e1}
	pids := map[string]int{}
	for _, n := range nodes {
		pids[n.Name] = n.proc.Pid()
	}

	// ---- 1. converged; the edge's connections go to onprem-1
	waitMesh(t, 30*time.Second, o1, c1, e1)
	waitFor(t, 15*time.Second, "edge-1 to list echo on both exporters, healthy, and RTTs to both", func() (bool, string) {
		st, err := tryStatus(t, e1)
		if err != nil {
			return false, err.Error()
		}
		svc, ok := service(st, "echo")
		if !ok || len(svc.Endpoints) != 2 {
			return false, fmt.Sprintf("echo: %+v", svc)
		}
		for _, ep := range svc.Endpoints {
			if !ep.Healthy {
				return false, fmt.Sprintf("endpoint %+v", ep)
			}
		}
		for _, n := range []string{o1.Name, c1.Name} {
			if p, _ := peer(st, n); p.RTT() <= 0 || !p.Up {
				return false, fmt.Sprintf("%s: %+v", n, p)
			}
		}
		return true, ""
	})
	cl := startNsClient(t, netnsPath(edge.ns), importAddr, 50*time.Millisecond)
	tStart := time.Now()
	waitFor(t, 20*time.Second, "10 client connections from the edge", func() (bool, string) {
		n := len(cl.snapshot())
		return n >= 10, fmt.Sprintf("%d so far", n)
	})
	byNode, failed, _ := summarizeAttempts(cl.snapshot())
	if len(failed) > 0 || len(byNode) != 1 || byNode[o1.Name] == 0 {
		t.Fatalf("before the cut: served %v, failed %d (first: %v); want all by onprem-1", byNode, len(failed), firstAttemptErr(failed))
	}

	// A connection that stays open, idle, across the cut: README promises
	// that established streams ride out stalls shorter than
	// failover.session_timeout (15 s). Reported, not asserted (see below).
	held, heldBR, err := holdConn(netnsPath(edge.ns), importAddr)
	if err != nil {
		t.Fatalf("before the cut: held connection: %v", err)
	}
	defer held.Close()

	// ---- 2. cut onprem off for 10 s
	// Connections started before the cut took effect (tCut) and still
	// open after it began (tCut0) were established on the path that is
	// cut: they have no other path and may only ride it out, so they are
	// reported apart. Every connection started from tCut on is new.
	const cutFor = 10 * time.Second
	tCut0 := time.Now()
	if err := tp.Nft(ctx, core, cutRules); err != nil {
		t.Fatal(err)
	}
	tCut := time.Now()
	t.Logf("cut: onprem's traffic dropped in %s", core)
	var seenDown, seenNotUp time.Duration // edge-1's view of onprem-1
	var downState string
	for time.Since(tCut) < cutFor {
		if st, err := tryStatus(t, e1); err == nil {
			p, ok := peer(st, o1.Name)
			if seenDown == 0 && ok && (p.State == "suspect" || p.State == "dead") {
				seenDown, downState = time.Since(tCut), p.State
			}
			if seenDown > 0 && downState == "suspect" && p.State == "dead" {
				downState = "suspect, then dead"
			}
			if seenNotUp == 0 && ok && !p.Up {
				seenNotUp = time.Since(tCut)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	tRestore0 := time.Now()
	inNetns(t, core, "nft", "delete", "table", "inet", "me2e_cut")
	tRestore := time.Now()
	t.Logf("restore: cut lasted %s", tRestore.Sub(tCut).Round(time.Millisecond))
	heldDone := make(chan string, 1)
	go func() {
		start := time.Now()
		err := holdRoundTrip(held, heldBR, "held-2\n")
		if err != nil {
			heldDone <- fmt.Sprintf("broke %s after the restore: %v", time.Since(start).Round(time.Millisecond), err)
			return
		}
		heldDone <- fmt.Sprintf("rode out the cut: echoed %s after the restore", time.Since(start).Round(time.Millisecond))
	}()

	if a, ok := cl.firstServedBy(c1.Name, tCut); !ok || a.end.After(tRestore) {
		t.Errorf("no connection served by cloud-1 during the cut")
	} else {
		rto := a.end.Sub(tCut)
		t.Logf("failover: first connection served by cloud-1 %s after the cut", rto.Round(time.Millisecond))
		if rto > 5*time.Second {
			t.Errorf("failover took %s, want a few seconds", rto.Round(time.Millisecond))
		}
	}
	if seenDown == 0 {
		t.Errorf("edge-1 never saw onprem-1 suspect or dead during the %s cut", cutFor)
	} else {
		t.Logf("membership: edge-1 saw onprem-1 %s, first %s after the cut", downState, seenDown.Round(time.Millisecond))
	}
	if seenNotUp > 0 {
		t.Logf("data path: edge-1 marked onprem-1 not up %s after the cut", seenNotUp.Round(time.Millisecond))
	} else {
		t.Logf("data path: edge-1's status never showed onprem-1 not up (polled every 250 ms)")
	}

	// ---- 3. restored: reconvergence and failback within 10 s, no restart
	const within = 10 * time.Second
	// failbackRun consecutive connections served by onprem-1, up to the
	// latest, make the failback; it happened when the first of them did.
	const failbackRun = 5
	conds := []struct {
		what string
		ok   func(sts map[string]node.Status) bool
		at   time.Duration
	}{
		{what: "edge-1 sees onprem-1 alive", ok: func(sts map[string]node.Status) bool {
			p, ok := peer(sts[e1.Name], o1.Name)
			return ok && p.State == "alive"
		}},
		{what: "cloud-1 sees onprem-1 alive", ok: func(sts map[string]node.Status) bool {
			p, ok := peer(sts[c1.Name], o1.Name)
			return ok && p.State == "alive"
		}},
		{what: "onprem-1 sees edge-1 and cloud-1 alive", ok: func(sts map[string]node.Status) bool {
			p, ok := peer(sts[o1.Name], e1.Name)
			q, ok2 := peer(sts[o1.Name], c1.Name)
			return ok && ok2 && p.State == "alive" && q.State == "alive"
		}},
		// Last, so that it is latched after the others: see upAt.
		{what: "edge-1 sees onprem-1 up (usable, hold-down over)", ok: func(sts map[string]node.Status) bool {
			p, ok := peer(sts[e1.Name], o1.Name)
			return ok && p.State == "alive" && p.Up
		}},
	}
	sts := map[string]node.Status{}
	failedBack := false
	var upAt time.Time // when edge-1 was first seen holding onprem-1 usable
	for {
		for _, n := range nodes {
			if st, err := tryStatus(t, n); err == nil {
				sts[n.Name] = st
			}
		}
		pending := 0
		for i := range conds {
			if conds[i].at == 0 {
				if conds[i].ok(sts) {
					conds[i].at = time.Since(tRestore)
					if i == len(conds)-1 {
						upAt = time.Now()
					}
				} else {
					pending++
				}
			}
		}
		// Not latched, and only once edge-1 holds onprem-1 usable: before
		// that, a run of connections to onprem-1 may be a flap (see below).
		failedBack = false
		if pending == 0 {
			_, failedBack = cl.finalRun(o1.Name, upAt, failbackRun)
		}
		if failedBack || time.Since(tRestore) > within {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, cd := range conds {
		if cd.at == 0 {
			t.Errorf("after the restore: not within %s: %s", within, cd.what)
		} else {
			t.Logf("after the restore: %s after %s", cd.what, cd.at.Round(time.Millisecond))
		}
	}

	// A little more traffic, then the client's whole record: from the
	// failback on, every connection went to onprem-1.
	time.Sleep(time.Second)
	cl.Stop()
	all := cl.snapshot()
	t.Logf("client after the restore, by serving node: %s", attemptRuns(all, tRestore))
	if first, ok := cl.finalRun(o1.Name, tRestore, failbackRun); !failedBack {
		t.Errorf("after the restore: no failback to onprem-1 (%d connections in a row up to the latest) within %s", failbackRun, within)
	} else if !ok {
		t.Errorf("after the restore: connections went to onprem-1 again, then away from it")
	} else {
		fb := first.end.Sub(tRestore)
		t.Logf("failback: every connection served by onprem-1 from %s after the restore on", fb.Round(time.Millisecond))
		if fb > within {
			t.Errorf("failback took %s, want within %s", fb.Round(time.Millisecond), within)
		}
		// Connections to onprem-1 before that, while edge-1 still held it
		// down, are worth knowing about. Seen: on the heal, onprem-1's
		// stale "cloud-1 is dead" verdict reaches edge-1, which marks
		// cloud-1 dead until cloud-1 refutes it (tens of ms) and, if its
		// health check ticks meanwhile, holds cloud-1 down for
		// failover.hold_down although its pings never stopped; meanwhile
		// every endpoint is a last resort and onprem-1, preferred, is
		// tried first.
		early := 0
		for _, a := range all {
			if a.err == nil && a.node == o1.Name && !a.start.Before(tRestore) && a.start.Before(first.start) {
				early++
			}
		}
		if early > 0 {
			t.Logf("note: %d connection(s) served by onprem-1 before its failback, while edge-1 still held it down (meshd flaps; see the comment here)", early)
		}
	}
	if t.Failed() {
		for _, n := range nodes {
			b, _ := json.MarshalIndent(sts[n.Name], "", "  ")
			t.Logf("last status of %s:\n%s", n.Name, b)
		}
	}
	var inFlight, before []nsAttempt
	for _, a := range startedIn(all, tStart, tCut) {
		if a.end.After(tCut0) {
			inFlight = append(inFlight, a)
		} else {
			before = append(before, a)
		}
	}
	for _, a := range inFlight {
		res := "served by " + a.node
		if a.err != nil {
			res = "failed: " + a.err.Error()
		}
		t.Logf("client: a connection in flight at the cut (started %s before it) ended %s after it, %s",
			tCut.Sub(a.start).Round(time.Millisecond), a.end.Sub(tCut).Round(time.Millisecond), res)
	}
	for _, ph := range []struct {
		name string
		as   []nsAttempt
	}{
		{"before the cut", before},
		{"started during the cut", startedIn(all, tCut, tRestore0)},
		{"started around the restore", startedIn(all, tRestore0, tRestore)},
		{"started after the restore", startedIn(all, tRestore, tRestore.Add(time.Hour))},
	} {
		byNode, failed, slowest := summarizeAttempts(ph.as)
		t.Logf("client %s: served %v, failed %d, slowest %s", ph.name, byNode, len(failed), slowest.Round(time.Millisecond))
		for i, a := range failed {
			if i == 5 {
				t.Errorf("… and %d more failed connections %s", len(failed)-5, ph.name)
				break
			}
			t.Errorf("client connection %s failed: started %+.3fs after the cut, ended %+.3fs: %v",
				ph.name, a.start.Sub(tCut).Seconds(), a.end.Sub(tCut).Seconds(), a.err)
		}
	}
	// The held connection: established streams ride out a stall shorter
	// than failover.session_timeout (15 s; the cut is 10 s).
	select {
	case r := <-heldDone:
		t.Logf("held connection (opened before the cut, idle during it): %s", r)
		if !strings.HasPrefix(r, "rode out") {
			t.Errorf("held connection did not survive the cut: %s", r)
		}
	case <-time.After(nsConnDeadline):
		t.Errorf("held connection: no outcome within %s", nsConnDeadline)
	}

	if st, err := tryStatus(t, e1); err == nil {
		for _, im := range st.Imports {
			if im.Name == "echo" {
				t.Logf("edge-1 import echo: total %d, failed %d", im.Total, im.Failed)
				if im.Failed != 0 {
					t.Errorf("edge-1's import echo counts %d failed connections, want 0", im.Failed)
				}
			}
		}
	}

	// No restart: the same processes ran throughout.
	for _, n := range nodes {
		if !n.running() || n.proc.Pid() != pids[n.Name] {
			t.Errorf("%s is not the process started at the beginning (running %v): %v", n.Name, n.running(), n.exitErr())
		}
	}
}

// attemptRuns describes the attempts that started at or after since, in
// start order, as runs of the same outcome, with when they started:
// "cloud-1×23 (+0.03s…+1.24s), onprem-1×5 (…)".
func attemptRuns(as []nsAttempt, since time.Time) string {
	var b strings.Builder
	for i := 0; i < len(as); {
		if as[i].start.Before(since) {
			i++
			continue
		}
		key := func(a nsAttempt) string {
			if a.err != nil {
				return "FAILED"
			}
			return a.node
		}
		j := i
		for j < len(as) && key(as[j]) == key(as[i]) {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s×%d (+%.2fs…+%.2fs)", key(as[i]), j-i,
			as[i].start.Sub(since).Seconds(), as[j-1].start.Sub(since).Seconds())
		i = j
	}
	return b.String()
}

// firstAttemptErr is the error of the first failed attempt, if any.
func firstAttemptErr(as []nsAttempt) error {
	if len(as) == 0 {
		return nil
	}
	return as[0].err
}
