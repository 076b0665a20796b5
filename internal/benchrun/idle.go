package benchrun

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

// idleResult is what one request to every client worker got back.
type idleResult struct {
	r   bench.WorkerResponse
	err error
}

// all sends req(c) to every client worker at once and collects the
// answers, each bounded by timeout.
func (m *idleMesh) all(ctx context.Context, req func(c idleClient) bench.WorkerRequest, timeout time.Duration) []idleResult {
	out := make([]idleResult, len(m.clients))
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

// failed counts the failed connections of rs, and the first error: a
// worker that failed counts all of its connections.
func (m *idleMesh) failed(rs []idleResult, what string) (n int, first error) {
	for i, r := range rs {
		if r.err != nil {
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

// startClients starts the client workers: each importer's share of total
// connections split over workers of at most idleConnsPerWorker.
func (m *idleMesh) startClients(total int) error {
	for i, n := range idleShares(total, len(m.importers)) {
		parts := (n + idleConnsPerWorker - 1) / idleConnsPerWorker
		for j, share := range idleShares(n, max(parts, 1)) {
			w, err := bench.StartWorker(fmt.Sprintf("idle-client-%d.%d", i+1, j+1), []string{m.env.Exe, "bench-worker"}, nil)
			if err != nil {
				return err
			}
			m.clients = append(m.clients, idleClient{w: w, importer: i, n: share})
		}
	}
	return nil
}

// rss reads the RSS of every node of procs (0 for one that cannot be read).
func (m *idleMesh) rss(procs []*lab.Proc) []int64 {
	v := make([]int64, len(procs))
	for i, p := range procs {
		var err error
		if v[i], err = bench.RSS(p.Pid()); err != nil {
			m.progress("idle: rss of %s: %v", p.Name, err)
		}
	}
	return v
}

// idle runs the idle measurement and records the idle_* keys. Setup
// failures are returned; connection failures are counted.
func (r *run) idle(ctx context.Context) error {
	o := r.o
	t0 := time.Now()
	r.progress("idle: starting %d exporter(s) in site a (each with its own echo backend worker) and %d importer(s) in site b on 127.0.0.1",
		o.IdleNodes, o.IdleNodes)
	m, err := startIdleMesh(ctx, o.IdleNodes, o.Verbose, r.progress)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	r.progress("idle: mesh of %d nodes up in %v", 2*o.IdleNodes, time.Since(t0).Round(time.Millisecond))
	if err := m.startClients(o.Idle); err != nil {
		return err
	}
	imp := roleRSS{Role: "importer", Before: m.rss(m.importers)}
	exp := roleRSS{Role: "exporter", Before: m.rss(m.exporters)}
	held, carried := r.idleHold(ctx, m)
	imp.Carried = carried
	imp.After, exp.After = m.rss(m.importers), m.rss(m.exporters)
	var backendSum int
	exp.Carried, backendSum = r.backendConns(ctx, m)
	for _, p := range append(append([]*lab.Proc(nil), m.importers...), m.exporters...) {
		if p.Exited() {
			r.addErrs("idle_node_exits", 1, fmt.Errorf("node %s exited: %v\n%s", p.Name, p.WaitErr(), p.LogTail()))
		}
	}
	r.res.Set("idle_hold_s", o.IdleHold.Seconds())
	r.res.Set("idle_backend_conns", backendSum)
	if backendSum != held {
		r.progress("idle: the exporters' backends hold %d connections, the clients %d", backendSum, held)
	}
	r.recordRSS(imp, exp, held)
	return nil
}

// idleHold opens the connections, verifies them, holds them IdleHold and
// verifies them again. It returns how many are held, and how many of them
// each importer carries.
func (r *run) idleHold(ctx context.Context, m *idleMesh) (held int, carried []int) {
	o := r.o
	parallel := max(2, idleInFlight/len(m.clients))
	r.res.Set("idle_parallel", parallel*len(m.clients))
	// Generous bounds: every worker at 30 connections a second at worst
	// (12 nodes and 12 workers share 2 cores in the 100,000 run).
	timeout := 3*time.Minute + time.Duration((o.Idle+len(m.clients)-1)/len(m.clients))*30*time.Millisecond
	setup := time.Now()
	opened := m.all(ctx, func(c idleClient) bench.WorkerRequest {
		return bench.WorkerRequest{Op: bench.OpIdleOpen, Addr: m.imports[c.importer], N: c.n, Parallel: parallel, Spread: true}
	}, timeout)
	setupTime := time.Since(setup)
	openErrs, first := m.failed(opened, "open")
	carried = make([]int, len(m.importers))
	for i, res := range opened {
		if res.err == nil {
			carried[m.clients[i].importer] += res.r.Conns
			held += res.r.Conns
		}
	}
	r.progress("idle: %d/%d connections over %d client workers established and verified in %v (%.0f/s)", held, o.Idle,
		len(m.clients), setupTime.Round(time.Millisecond), float64(held)/setupTime.Seconds())
	r.res.Set("idle_nodes", o.IdleNodes)
	r.res.Set("idle_client_workers", len(m.clients))
	r.res.Set("idle_conns", held)
	r.res.Set("idle_setup_ms", setupTime.Milliseconds())
	r.addErrs("idle_open_errors", openErrs, first)
	if openErrs > 0 {
		defer m.logTails(3)
	}
	verify := func(key string) {
		t := time.Now()
		rs := m.all(ctx, func(idleClient) bench.WorkerRequest {
			return bench.WorkerRequest{Op: bench.OpIdleVerify, Parallel: parallel}
		}, timeout)
		n, first := m.failed(rs, "verify")
		r.progress("idle: %d connections verified in %v, %d errors", held, time.Since(t).Round(time.Millisecond), n)
		r.addErrs(key, n, first)
	}
	verify("idle_verify1_errors")
	r.progress("idle: holding %d connections for %v", held, o.IdleHold)
	select {
	case <-ctx.Done():
	case <-time.After(o.IdleHold):
	}
	verify("idle_verify2_errors")
	return held, carried
}

// backendConns asks each exporter's backend how many connections it
// holds: the connections that exporter carries; and their sum.
func (r *run) backendConns(ctx context.Context, m *idleMesh) (carried []int, sum int) {
	carried = make([]int, len(m.exporters))
	for i, b := range m.backends {
		resp, err := b.Call(ctx, bench.WorkerRequest{Op: bench.OpStats}, 15*time.Second)
		if err != nil {
			r.progress("idle: %v", err)
			continue
		}
		carried[i] = int(resp.Active)
		sum += int(resp.Active)
	}
	return carried, sum
}

// roleRSS is the RSS of the nodes of one role before and after the
// connections were held, and how many connections each carried.
type roleRSS struct {
	Role          string
	Before, After []int64
	Carried       []int
}

// growth is the RSS growth of all the role's nodes.
func (g roleRSS) growth() int64 {
	var s int64
	for i := range g.Before {
		s += g.After[i] - g.Before[i]
	}
	return s
}

// perConn is each carrying node's RSS growth per connection (whole
// bytes), and their mean and max; ok is false when no node carried any.
func (g roleRSS) perConn() (per []float64, mean, maxPer float64, ok bool) {
	var sum float64
	for i := range g.Before {
		if g.Carried[i] == 0 {
			continue
		}
		p := float64((g.After[i] - g.Before[i]) / int64(g.Carried[i]))
		per = append(per, p)
		sum += p
		maxPer = max(maxPer, p)
	}
	if len(per) == 0 {
		return nil, 0, 0, false
	}
	return per, sum / float64(len(per)), maxPer, true
}

// recordRSS records the RSS keys: with one pair each node's before and
// after, with more each node's connections and growth; per role the mean
// and max growth per connection; and the growth of all nodes per held
// connection.
func (r *run) recordRSS(imp, exp roleRSS, held int) {
	res := r.res
	if r.o.IdleNodes == 1 {
		res.Set("idle_rss_importer_before_bytes", imp.Before[0])
		res.Set("idle_rss_importer_after_bytes", imp.After[0])
		res.Set("idle_rss_exporter_before_bytes", exp.Before[0])
		res.Set("idle_rss_exporter_after_bytes", exp.After[0])
	}
	for _, g := range []roleRSS{imp, exp} {
		if r.o.IdleNodes > 1 {
			for i := range g.Before {
				res.Set(fmt.Sprintf("idle_%s_%d_conns", g.Role, i+1), g.Carried[i])
				res.Set(fmt.Sprintf("idle_%s_%d_rss_growth_bytes", g.Role, i+1), g.After[i]-g.Before[i])
			}
		}
		per, mean, maxPer, ok := g.perConn()
		if !ok {
			continue
		}
		res.Set("idle_rss_per_conn_"+g.Role+"_bytes", bench.Round(mean, 0))
		res.Set("idle_rss_per_conn_"+g.Role+"_max_bytes", maxPer)
		parts := make([]string, len(per))
		for i, p := range per {
			parts[i] = fmt.Sprintf("%.0f", p)
		}
		r.progress("idle: RSS per connection, %s(s): %s B (mean %.0f, max %.0f)", g.Role, strings.Join(parts, " "), mean, maxPer)
	}
	if held > 0 {
		growth := imp.growth() + exp.growth()
		res.Set("idle_rss_per_conn_mesh_bytes", float64(growth/int64(held)))
		r.progress("idle: RSS growth of all %d nodes per connection: %d B", 2*r.o.IdleNodes, growth/int64(held))
	}
}
