package benchrun

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/node"
)

// The scale measurement (issue 10, README "Performance", fleet scale): --nodes real `meshd join`
// processes in scaleSites sites on loopback. The first node of each site
// exports echo (served by this process); every node imports echo
// preferring its own site, then the next. It measures convergence, an
// import round trip from every node, then lets the mesh idle and reads
// each node's CPU time, RSS and gossip bytes, and last the first
// connection to a cold peer (one this node holds no session with) against
// a warm one.
const (
	scaleSites       = 4
	scaleConvergeMax = 3 * time.Minute
	// scaleSettle is the wait after the imports' round trips, before the
	// idle window: longer than the 10 s after its last connection a node
	// takes to narrow its scheduler to one P (internal/procs), so that
	// the window sees the steady idle state.
	scaleSettle      = 12 * time.Second
	scaleColdSamples = 20
	scaleParallel    = 8                     // status reads and import round trips at a time
	scaleStartEvery  = 50 * time.Millisecond // between node starts (20 a second)
)

// scaleNode is one node of the scale mesh.
type scaleNode struct {
	cfg      lab.Node
	proc     *lab.Proc
	exporter bool
	imp      string // its echo import's listen address
}

// scaleTopology returns the configs of n nodes (names n000…, sites s0…s3
// in turn): node i < scaleSites exports echo at targets[i]; every node
// imports echo with sites [own, next]; all join node 0.
func scaleTopology(env *lab.Env, n int, ports []int, targets []string) []scaleNode {
	nodes := make([]scaleNode, n)
	for i := range n {
		site := fmt.Sprintf("s%d", i%scaleSites)
		c := env.Node(fmt.Sprintf("n%03d", i), site)
		c.GossipBind, c.TunnelListen = lab.Loopback(ports[3*i]), lab.Loopback(ports[3*i+1])
		imp := lab.Loopback(ports[3*i+2])
		c.Imports = []lab.Import{{Name: "echo", Listen: imp, Sites: []string{site, fmt.Sprintf("s%d", (i+1)%scaleSites)}}}
		if i > 0 {
			c.Join = []string{nodes[0].cfg.GossipBind}
		}
		nodes[i] = scaleNode{cfg: c, imp: imp, exporter: i < scaleSites}
		if nodes[i].exporter {
			c.Exports = []lab.Export{{Name: "echo", Target: targets[i]}}
			nodes[i].cfg = c
		}
	}
	return nodes
}

// forEach runs f for every node, scaleParallel at a time.
func forEach(nodes []scaleNode, f func(i int, sn *scaleNode)) {
	sem := make(chan struct{}, scaleParallel)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i, &nodes[i])
		}()
	}
	wg.Wait()
}

func (r *run) scale(ctx context.Context) error {
	n := r.o.Nodes
	res := r.res
	res.Set("scale_nodes", n)
	res.Set("scale_sites", scaleSites)
	var targets []string
	book := newTagBook() // which site served a failover phase's client connection
	for site := range scaleSites {
		e, err := listenTagEcho(book, site)
		if err != nil {
			return err
		}
		defer e.Close()
		targets = append(targets, e.Addr())
	}
	env, err := lab.NewEnv("", "meshd-scale-", r.o.Verbose)
	if err != nil {
		return err
	}
	defer env.Close()
	ports, err := lab.FreePorts(3 * n)
	if err != nil {
		return err
	}
	nodes := scaleTopology(env, n, ports, targets)
	defer func() {
		forEach(nodes, func(_ int, sn *scaleNode) {
			if sn.proc != nil {
				sn.proc.Stop()
			}
		})
	}()
	r.progress("scale: starting %d meshd nodes in %d sites on 127.0.0.1", n, scaleSites)
	for i := range nodes {
		if i > 1 {
			// A paced start, as a fleet's rollout is: N processes
			// initialising at once on two cores starve each other's
			// gossip probes, and the mesh measures its own start-up storm.
			if err := sleepCtx(ctx, scaleStartEvery); err != nil {
				return err
			}
		}
		if nodes[i].proc, err = env.Start(nodes[i].cfg); err != nil {
			return err
		}
		if i == 0 { // the others join it: let it listen first
			if err := lab.WaitReady(ctx, 30*time.Second, nodes[0].proc, nil, lab.Want{Imports: 1},
				func(context.Context) error { return nil }); err != nil {
				return err
			}
		}
	}
	lastStart := time.Now()

	// Convergence: every node sees every other alive.
	conv, seen, err := scaleConverge(ctx, nodes, lastStart)
	if err != nil {
		return err
	}
	res.Set("scale_convergence_s", bench.Round(conv.Seconds(), 3))
	res.Set("scale_convergence_seen_s", bench.Round(seen.Seconds(), 3))
	r.progress("scale: all %d nodes see all others alive %.2fs after the last start (status reads showed it after %.2fs)", n, conv.Seconds(), seen.Seconds())

	// An import round trip from every node.
	var mu sync.Mutex
	var importErrs int
	var firstErr error
	forEach(nodes, func(_ int, sn *scaleNode) {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		var err error
		for range 3 { // the import waits for its endpoints (connect_timeout); retry a slow start
			if err = lab.EchoPing(cctx, sn.imp); err == nil {
				break
			}
		}
		if err != nil {
			mu.Lock()
			importErrs++
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", sn.cfg.Name, err)
			}
			mu.Unlock()
		}
	})
	res.Set("scale_import_ok", n-importErrs)
	r.addErrs("scale_import_errors", importErrs, firstErr)
	r.progress("scale: echo through the import works from %d of %d nodes", n-importErrs, n)

	if err := sleepCtx(ctx, scaleSettle); err != nil {
		return nil
	}
	if err := r.scaleIdle(ctx, nodes); err != nil {
		return err
	}
	r.scaleCold(ctx, nodes)
	r.scaleFailover(ctx, nodes, book)
	for _, sn := range nodes {
		if sn.proc.Exited() {
			r.addErrs("node_exits", 1, exitedErr(sn.cfg.Name, sn.proc.LogTail()))
		}
	}
	return nil
}

// scaleConverge polls every node's status until each sees all others
// alive, and returns when the last did, from since: conv from the peers'
// state_since (the moment each node's last peer became alive, its own
// clock, which on loopback is ours), seen from the moment a status read
// first showed it. seen is conv plus the polling's delay: at 100 nodes one
// round of status reads takes 5-9 s while the mesh starts up, and the
// pause after a round is as long, so seen overstated convergence by up to
// twice that (README "Performance", fleet scale).
func scaleConverge(ctx context.Context, nodes []scaleNode, since time.Time) (conv, seen time.Duration, err error) {
	return scaleConvergeWithin(ctx, nodes, since, scaleConvergeMax)
}

// convergedAt is when a node whose status shows every peer alive became
// so: the latest of its peers' state_since, within [since, seen]; seen
// when a peer has no state_since (an older build).
func convergedAt(peers []node.PeerStatus, since, seen time.Time) time.Time {
	at := since
	for _, p := range peers {
		t, ok := p.Since()
		if !ok {
			return seen
		}
		if t.After(at) {
			at = t
		}
	}
	if at.After(seen) {
		return seen
	}
	return at
}

// scaleConvergeWithin is scaleConverge giving up after limit.
func scaleConvergeWithin(ctx context.Context, nodes []scaleNode, since time.Time, limit time.Duration) (conv, seen time.Duration, err error) {
	done := make([]bool, len(nodes))
	var last, lastSeen time.Time
	deadline := time.Now().Add(limit)
	for {
		round := time.Now()
		var mu sync.Mutex
		var why string
		var exited error
		forEach(nodes, func(i int, sn *scaleNode) {
			if done[i] {
				return
			}
			if sn.proc.Exited() {
				mu.Lock()
				exited = exitedErr(sn.cfg.Name, sn.proc.LogTail())
				mu.Unlock()
				return
			}
			st, err := sn.proc.Status(ctx)
			at := time.Now()
			alive := 0
			for _, p := range st.Peers {
				if p.State == "alive" {
					alive++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil && alive == len(nodes)-1 {
				done[i] = true
				if c := convergedAt(st.Peers, since, at); c.After(last) {
					last = c
				}
				if at.After(lastSeen) {
					lastSeen = at
				}
			} else if why == "" {
				why = fmt.Sprintf("%s sees %d of %d alive (%v)", sn.cfg.Name, alive, len(nodes)-1, err)
			}
		})
		if !slices.Contains(done, false) {
			return last.Sub(since), lastSeen.Sub(since), nil
		}
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		if exited != nil {
			return 0, 0, exited
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("scale: mesh did not converge within %v: %s", limit, why)
		}
		// Status reads cost the nodes CPU (each lists every peer): at
		// least as long a pause as the round took, so that watching the
		// mesh converge takes at most half of what the nodes get.
		time.Sleep(max(250*time.Millisecond, time.Since(round)))
	}
}

// scaleIdle measures CPU, RSS, gossip bytes and sessions over the idle
// window, touching the nodes only at its ends.
func (r *run) scaleIdle(ctx context.Context, nodes []scaleNode) error {
	n := len(nodes)
	type sample struct {
		cpu              time.Duration
		sent, recv       uint64
		at               time.Time
		rss              int64
		sessions         int
		err              error
		exporter         bool
		sessionsByExport int
	}
	read := func(withStatus bool) []sample {
		out := make([]sample, n)
		forEach(nodes, func(i int, sn *scaleNode) {
			s := sample{exporter: sn.exporter}
			if s.cpu, s.err = bench.CPUTime(sn.proc.Pid()); s.err == nil {
				s.rss, s.err = bench.RSS(sn.proc.Pid())
			}
			s.at = time.Now()
			if withStatus && s.err == nil {
				var st node.Status
				if st, s.err = sn.proc.Status(ctx); s.err == nil {
					s.sent, s.recv = st.Node.GossipSentBytes, st.Node.GossipReceivedBytes
					for _, p := range st.Peers {
						if p.Session == node.SessionUp {
							s.sessions++
						}
					}
				}
			}
			out[i] = s
		})
		return out
	}
	before := read(true)
	r.progress("scale: idling %v", r.o.ScaleIdle)
	if err := sleepCtx(ctx, r.o.ScaleIdle); err != nil {
		return nil
	}
	after := read(false) // CPU and RSS first, untouched by a status read
	gossipAfter := read(true)
	var cpu, cpuExp, cpuOther []float64
	var rss []float64
	var sent, recv []float64
	var sessions []float64
	for i := range n {
		b, a, g := before[i], after[i], gossipAfter[i]
		for _, err := range []error{b.err, a.err, g.err} {
			if err != nil {
				return fmt.Errorf("scale: read %s: %w", nodes[i].cfg.Name, err)
			}
		}
		win := a.at.Sub(b.at).Seconds()
		pct := 100 * (a.cpu - b.cpu).Seconds() / win
		cpu = append(cpu, pct)
		if b.exporter {
			cpuExp = append(cpuExp, pct)
		} else {
			cpuOther = append(cpuOther, pct)
		}
		rss = append(rss, float64(a.rss)/(1<<20))
		gw := g.at.Sub(b.at).Seconds()
		sent = append(sent, float64(g.sent-b.sent)/gw)
		recv = append(recv, float64(g.recv-b.recv)/gw)
		sessions = append(sessions, float64(g.sessions))
	}
	res := r.res
	res.Set("scale_idle_s", bench.Round(r.o.ScaleIdle.Seconds(), 1))
	res.Set("scale_idle_cpu_pct_per_node", bench.Round(mean(cpu), 3))
	res.Set("scale_idle_cpu_pct_max", bench.Round(slices.Max(cpu), 3))
	res.Set("scale_idle_cpu_pct_exporters", bench.Round(mean(cpuExp), 3))
	res.Set("scale_idle_cpu_pct_others", bench.Round(mean(cpuOther), 3))
	res.Set("scale_idle_cpu_cores_total", bench.Round(sum(cpu)/100, 3))
	res.Set("scale_rss_mb_per_node", bench.Round(mean(rss), 1))
	res.Set("scale_rss_mb_max", bench.Round(slices.Max(rss), 1))
	res.Set("scale_gossip_sent_bytes_per_s_per_node", bench.Round(mean(sent), 0))
	res.Set("scale_gossip_recv_bytes_per_s_per_node", bench.Round(mean(recv), 0))
	res.Set("scale_sessions_per_node", bench.Round(mean(sessions), 2))
	res.Set("scale_sessions_max", slices.Max(sessions))
	r.progress("scale: idle CPU %.3f%% of a core per node (max %.3f%%, exporters %.3f%%, others %.3f%%), RSS %.1f MB per node, gossip %.0f B/s sent per node, %.2f sessions per node",
		mean(cpu), slices.Max(cpu), mean(cpuExp), mean(cpuOther), mean(rss), mean(sent), mean(sessions))
	return nil
}

// scaleCold measures meshd ping's first round trip from nodes to peers
// they hold no session with (a node that exports nothing, in another
// site: nobody has traffic with it), and to a warm one (the node's own
// site's exporter) as the baseline.
func (r *run) scaleCold(ctx context.Context, nodes []scaleNode) {
	var cold, warm []time.Duration
	errs := 0
	var firstErr error
	ping := func(from *scaleNode, to string) (time.Duration, error) {
		var res node.PingResult
		err := control.Do(ctx, from.proc.Sock, http.MethodPost, "/ping", node.PingRequest{Peer: to, Count: 1}, &res, 10*time.Second)
		if err == nil && (res.Received != 1 || len(res.Replies) != 1) {
			err = fmt.Errorf("ping %s from %s: %d of 1 answered (%+v)", to, from.cfg.Name, res.Received, res.Replies)
		}
		if err != nil {
			return 0, err
		}
		return time.Duration(res.Replies[0].RTTMs * float64(time.Millisecond)), nil
	}
	for k := 0; k < len(nodes) && len(cold) < scaleColdSamples && ctx.Err() == nil; k++ {
		from := &nodes[k]
		// A non-exporter two sites away: not in from's warm set, and no
		// one imports from it.
		var to *scaleNode
		for j := range nodes {
			c := &nodes[(k+2+j*scaleSites)%len(nodes)]
			if !c.exporter && c != from {
				to = c
				break
			}
		}
		if to == nil {
			break
		}
		st, err := from.proc.Status(ctx)
		if err != nil {
			continue
		}
		idle := false
		for _, p := range st.Peers {
			idle = idle || (p.Name == to.cfg.Name && p.Session == node.SessionIdle)
		}
		if !idle {
			continue // a session from an earlier sample: not cold
		}
		d, err := ping(from, to.cfg.Name)
		if err != nil {
			errs++
			firstErr = cmpErr(firstErr, err)
			continue
		}
		cold = append(cold, d)
		if d, err := ping(from, nodes[k%scaleSites].cfg.Name); err == nil && k >= scaleSites {
			warm = append(warm, d)
		}
	}
	res := r.res
	res.Set("scale_cold_samples", len(cold))
	r.addErrs("scale_cold_errors", errs, firstErr)
	if len(cold) == 0 {
		return
	}
	slices.Sort(cold)
	slices.Sort(warm)
	cp50 := bench.Percentile(cold, 50)
	res.Set("scale_cold_first_conn_p50_ms", bench.Round(float64(cp50)/1e6, 3))
	res.Set("scale_cold_first_conn_max_ms", bench.Round(float64(cold[len(cold)-1])/1e6, 3))
	if len(warm) > 0 {
		wp50 := bench.Percentile(warm, 50)
		res.Set("scale_warm_conn_p50_ms", bench.Round(float64(wp50)/1e6, 3))
		res.Set("scale_cold_first_conn_p50_ratio", bench.Round(bench.Ratio(float64(cp50), float64(wp50)), 2))
	}
	r.progress("scale: first connection to a cold peer p50 %v max %v (%d samples); to a warm one p50 %v",
		cp50.Round(time.Microsecond), cold[len(cold)-1].Round(time.Microsecond), len(cold), bench.Percentile(warm, 50).Round(time.Microsecond))
}

// port is the port of a host:port the topology wrote.
func port(hostport string) int {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return 0
	}
	return int(ap.Port())
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return sum(xs) / float64(len(xs))
}

func sum(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
