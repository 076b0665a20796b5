package main

// The idle-connection measurement of meshd bench: --idle connections held
// through --idle-nodes importer/exporter pairs on loopback. A process may
// hold only RLIMIT_NOFILE descriptors (20,000 on the reference machine),
// so nothing of this runs in the bench process itself: each exporter
// exports `echo` from its own backend worker (a bench-worker serving a
// lean echo), the connections are opened and held by client workers of at
// most idleConnsPerWorker each, spread over the importers and bound to
// source addresses 127.0.0.2-254 in turn. Every connection is verified by
// a round trip when opened, again after --idle-hold; RSS of every node is
// read before and after, and divided by the connections that node
// carried (importer: the connections it accepted; exporter: the
// connections its backend holds).

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/lab"
)

// idleConnsPerWorker caps the connections of one client worker, well under
// a 20,000 descriptor limit.
const idleConnsPerWorker = 16000

// idleInFlight is how many connections all client workers together open
// (and verify) at a time, split over the workers. More does not set up
// faster on a small machine (the nodes are CPU-bound), it only queues
// work in front of the nodes' gossip and tunnel pings: with 12 nodes on
// 2 cores and 384 in flight, peers were declared down and sessions
// closed under the load.
const idleInFlight = 64

// idleMesh is the nodes and workers of the idle measurement.
type idleMesh struct {
	env       *lab.Env
	exporters []*lab.Proc
	importers []*lab.Proc
	backends  []*bench.Worker // one per exporter
	imports   []string        // importer i's echo import listener
	clients   []idleClient
	progress  func(string, ...any)
}

// idleClient is one client worker and its share of connections.
type idleClient struct {
	w        *bench.Worker
	importer int // index into importers
	n        int
}

func (m *idleMesh) close() {
	var wg sync.WaitGroup
	for _, c := range m.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.w.Close(); err != nil {
				m.progress("idle: %v", err)
			}
		}()
	}
	wg.Wait()
	procs := append(append([]*lab.Proc(nil), m.importers...), m.exporters...)
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop() }()
	}
	wg.Wait()
	for _, b := range m.backends {
		if err := b.Close(); err != nil {
			m.progress("idle: %v", err)
		}
	}
	if m.env != nil {
		m.env.Close()
	}
}

// startIdleMesh starts nodes exporters in site a, each exporting echo from
// its own backend worker, and nodes importers in site b importing echo
// (least_conn over the exporters), and waits until every importer sees
// every exporter's echo and a round trip through its import works.
func startIdleMesh(ctx context.Context, nodes int, verbose bool, progress func(string, ...any)) (*idleMesh, error) {
	env, err := lab.NewEnv("", "meshd-bench-idle-", verbose)
	if err != nil {
		return nil, err
	}
	m := &idleMesh{env: env, progress: progress}
	ports, err := lab.FreePorts(5 * nodes)
	if err != nil {
		return m, err
	}
	var logTo io.Writer
	if verbose {
		logTo = os.Stderr
	}
	for i := range nodes {
		w, err := bench.StartWorker(fmt.Sprintf("idle-backend-%d", i+1), []string{env.Exe, "bench-worker"}, logTo)
		if err != nil {
			return m, err
		}
		m.backends = append(m.backends, w)
	}
	backendAddrs := make([]string, nodes)
	for i, w := range m.backends {
		r, err := w.Call(ctx, bench.WorkerRequest{Op: bench.OpServe, LeanEcho: "127.0.0.1:0"}, 15*time.Second)
		if err != nil {
			return m, err
		}
		backendAddrs[i] = r.LeanEcho
	}
	seed := lab.Loopback(ports[0])
	var expNames []string
	for i := range nodes {
		n := env.Node(fmt.Sprintf("idle-exporter-%d", i+1), "a")
		n.GossipBind, n.TunnelListen = lab.Loopback(ports[2*i]), lab.Loopback(ports[2*i+1])
		if i > 0 {
			n.Join = []string{seed}
		}
		n.Exports = []lab.Export{{Name: "echo", Target: backendAddrs[i]}}
		p, err := env.Start(n)
		if err != nil {
			return m, err
		}
		m.exporters = append(m.exporters, p)
		expNames = append(expNames, n.Name)
	}
	for i := range nodes {
		n := env.Node(fmt.Sprintf("idle-importer-%d", i+1), "b")
		n.GossipBind, n.TunnelListen = lab.Loopback(ports[2*nodes+2*i]), lab.Loopback(ports[2*nodes+2*i+1])
		n.Join = []string{seed}
		imp := lab.Loopback(ports[4*nodes+i])
		n.Imports = []lab.Import{{Name: "echo", Listen: imp, Sites: []string{"a"}, Balance: "least_conn"}}
		p, err := env.Start(n)
		if err != nil {
			return m, err
		}
		m.importers = append(m.importers, p)
		m.imports = append(m.imports, imp)
	}
	want := lab.Want{Peers: expNames, Services: []string{"echo"}, Endpoints: nodes, Imports: 1}
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i, imp := range m.importers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = lab.WaitReady(ctx, 60*time.Second, imp, m.exporters, want,
				func(ctx context.Context) error { return lab.EchoPing(ctx, m.imports[i]) })
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return m, err
		}
	}
	return m, nil
}

// logTails prints the last lines of every node log that has any (the
// nodes log at warn level: failed import connections), at most n nodes.
func (m *idleMesh) logTails(n int) {
	for _, p := range append(append([]*lab.Proc(nil), m.importers...), m.exporters...) {
		if n == 0 {
			return
		}
		if t := p.LogTail(); t != "" && !strings.HasPrefix(t, "(no log") {
			n--
			lines := strings.Split(t, "\n")
			m.progress("idle: %s log (last lines):\n%s", p.Name, strings.Join(lines[max(0, len(lines)-5):], "\n"))
		}
	}
}

// idleShares splits total connections over n parts as evenly as possible.
func idleShares(total, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = total / n
		if i < total%n {
			s[i]++
		}
	}
	return s
}

// runIdle runs the idle measurement and records the idle_* keys. Setup
// failures are returned; connection failures are counted through addErrs.
func runIdle(ctx context.Context, o benchOpts, res *bench.Results, addErrs func(string, int, error), progress func(string, ...any)) error {
	t0 := time.Now()
	progress("idle: starting %d exporter(s) in site a (each with its own echo backend worker) and %d importer(s) in site b on 127.0.0.1",
		o.idleNodes, o.idleNodes)
	m, err := startIdleMesh(ctx, o.idleNodes, o.verbose, progress)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	progress("idle: mesh of %d nodes up in %v", 2*o.idleNodes, time.Since(t0).Round(time.Millisecond))

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	perImporter := idleShares(o.idle, o.idleNodes)
	for i, n := range perImporter {
		parts := (n + idleConnsPerWorker - 1) / idleConnsPerWorker
		for j, share := range idleShares(n, max(parts, 1)) {
			w, err := bench.StartWorker(fmt.Sprintf("idle-client-%d.%d", i+1, j+1), []string{exe, "bench-worker"}, nil)
			if err != nil {
				return err
			}
			m.clients = append(m.clients, idleClient{w: w, importer: i, n: share})
		}
	}

	rss := func(procs []*lab.Proc) []int64 {
		v := make([]int64, len(procs))
		for i, p := range procs {
			var err error
			if v[i], err = bench.RSS(p.Pid()); err != nil {
				progress("idle: rss of %s: %v", p.Name, err)
			}
		}
		return v
	}
	impBefore, expBefore := rss(m.importers), rss(m.exporters)

	// Every client worker at once; each answers with its counts.
	type result struct {
		r   bench.WorkerResponse
		err error
	}
	all := func(req func(c idleClient) bench.WorkerRequest, timeout time.Duration) []result {
		out := make([]result, len(m.clients))
		var wg sync.WaitGroup
		for i, c := range m.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[i].r, out[i].err = c.w.Call(ctx, req(c), timeout)
			}()
		}
		wg.Wait()
		return out
	}
	sum := func(rs []result, what string) (n int, first error) {
		for i, r := range rs {
			if r.err != nil {
				// The worker failed: all of its connections count as failed.
				n += m.clients[i].n
				if first == nil {
					first = r.err
				}
				continue
			}
			n += r.r.Errors
			if first == nil && r.r.FirstErr != "" {
				first = fmt.Errorf("%s (%s): %s", what, m.clients[i].w.Name, r.r.FirstErr)
			}
		}
		return n, first
	}
	parallel := max(2, idleInFlight/len(m.clients))
	res.Set("idle_parallel", parallel*len(m.clients))
	// Generous bounds: every worker at 30 connections a second at worst
	// (12 nodes and 12 workers share 2 cores in the 100,000 run).
	openTimeout := 3*time.Minute + time.Duration((o.idle+len(m.clients)-1)/len(m.clients))*30*time.Millisecond
	setup := time.Now()
	opened := all(func(c idleClient) bench.WorkerRequest {
		return bench.WorkerRequest{Op: bench.OpIdleOpen, Addr: m.imports[c.importer], N: c.n, Parallel: parallel, Spread: true}
	}, openTimeout)
	setupTime := time.Since(setup)
	openErrs, first := sum(opened, "open")
	carriedImp := make([]int, len(m.importers))
	held := 0
	for i, r := range opened {
		if r.err == nil {
			carriedImp[m.clients[i].importer] += r.r.Conns
			held += r.r.Conns
		}
	}
	progress("idle: %d/%d connections over %d client workers established and verified in %v (%.0f/s)", held, o.idle,
		len(m.clients), setupTime.Round(time.Millisecond), float64(held)/setupTime.Seconds())
	res.Set("idle_nodes", o.idleNodes)
	res.Set("idle_client_workers", len(m.clients))
	res.Set("idle_conns", held)
	res.Set("idle_setup_ms", setupTime.Milliseconds())
	addErrs("idle_open_errors", openErrs, first)

	verify := func(key string) {
		t := time.Now()
		rs := all(func(idleClient) bench.WorkerRequest {
			return bench.WorkerRequest{Op: bench.OpIdleVerify, Parallel: parallel}
		}, openTimeout)
		n, first := sum(rs, "verify")
		progress("idle: %d connections verified in %v, %d errors", held, time.Since(t).Round(time.Millisecond), n)
		addErrs(key, n, first)
	}
	verify("idle_verify1_errors")
	progress("idle: holding %d connections for %v", held, o.idleHold)
	select {
	case <-ctx.Done():
	case <-time.After(o.idleHold):
	}
	verify("idle_verify2_errors")
	impAfter, expAfter := rss(m.importers), rss(m.exporters)

	carriedExp := make([]int, len(m.exporters))
	backendSum := 0
	for i, b := range m.backends {
		r, err := b.Call(ctx, bench.WorkerRequest{Op: bench.OpStats}, 15*time.Second)
		if err != nil {
			progress("idle: %v", err)
			continue
		}
		carriedExp[i] = int(r.Active)
		backendSum += int(r.Active)
	}
	for _, p := range append(append([]*lab.Proc(nil), m.importers...), m.exporters...) {
		if p.Exited() {
			addErrs("idle_node_exits", 1, fmt.Errorf("node %s exited: %v\n%s", p.Name, p.WaitErr(), p.LogTail()))
		}
	}
	if openErrs > 0 {
		m.logTails(3)
	}
	res.Set("idle_hold_s", o.idleHold.Seconds())
	res.Set("idle_backend_conns", backendSum)
	if backendSum != held {
		progress("idle: the exporters' backends hold %d connections, the clients %d", backendSum, held)
	}
	if o.idleNodes == 1 {
		res.Set("idle_rss_importer_before_bytes", impBefore[0])
		res.Set("idle_rss_importer_after_bytes", impAfter[0])
		res.Set("idle_rss_exporter_before_bytes", expBefore[0])
		res.Set("idle_rss_exporter_after_bytes", expAfter[0])
	}
	var growth int64
	perConn := func(role string, before, after []int64, carried []int) {
		var sumPer, maxPer float64
		k := 0
		var parts []string
		for i := range before {
			growth += after[i] - before[i]
			if o.idleNodes > 1 {
				res.Set(fmt.Sprintf("idle_%s_%d_conns", role, i+1), carried[i])
				res.Set(fmt.Sprintf("idle_%s_%d_rss_growth_bytes", role, i+1), after[i]-before[i])
			}
			if carried[i] == 0 {
				continue
			}
			per := float64((after[i] - before[i]) / int64(carried[i]))
			sumPer += per
			maxPer = max(maxPer, per)
			k++
			parts = append(parts, fmt.Sprintf("%.0f", per))
		}
		if k == 0 {
			return
		}
		res.Set("idle_rss_per_conn_"+role+"_bytes", bench.Round(sumPer/float64(k), 0))
		res.Set("idle_rss_per_conn_"+role+"_max_bytes", maxPer)
		progress("idle: RSS per connection, %s(s): %s B (mean %.0f, max %.0f)", role, strings.Join(parts, " "), sumPer/float64(k), maxPer)
	}
	perConn("importer", impBefore, impAfter, carriedImp)
	perConn("exporter", expBefore, expAfter, carriedExp)
	if held > 0 {
		res.Set("idle_rss_per_conn_mesh_bytes", float64(growth/int64(held)))
		progress("idle: RSS growth of all %d nodes per connection: %d B", 2*o.idleNodes, growth/int64(held))
	}
	return nil
}
