package benchrun

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/node"
)

// The failover phases of the scale measurement (issue 10 items 3 and 6),
// after the idle and cold-peer ones, each behind its flag:
//
//   - drill: foClients non-exporters of s0 are reloaded to import echo
//     preferring [s1, s2] (nothing in the base topology prefers a site
//     other than its own, and a drill cuts only traffic between sites);
//     they carry client loops while the first of them runs a drill of
//     s1 (the way meshd drill does) for foDrillCut. Afterwards their
//     imports are reloaded back.
//   - sigstop: client loops on foClients non-exporters of s2 (which
//     prefer [s2, s3]) while n002, s2's exporter, is frozen for foFreeze.
//   - partition (root, nft): sites {s0,s1} and {s2,s3} split (partition.go)
//     until each half sees the other not alive (at most foSplitWait), then
//     healed; the time until every node sees all others alive again.
const (
	foClients  = 4
	foDrillCut = 4 * time.Second
	foFreeze   = 5 * time.Second
	foWarmOK   = 10               // connections in a row served by the preferred site before a cut
	foWarmMax  = 15 * time.Second // to get there
	// foDrillSettle is how long the drill's importers run after their
	// reload before the cut: their new warm sessions (s2's exporter) get
	// past the failback hold-down, as in a mesh that has been running.
	foDrillSettle = 3 * time.Second
	foBackMax     = 15 * time.Second // after a thaw, to be served by the thawed site again
	foTail        = 300 * time.Millisecond
	// foSplitMin and foSplitProbe bound the wait for the split: at least
	// 20 s, and a full round of memberlist's probes (each node probes one
	// member every 500 ms, so every one of N in N × 500 ms): a member that
	// missed the others' suspicion of a peer sees it go only when it
	// probes it itself.
	foSplitMin   = 20 * time.Second
	foSplitProbe = 500 * time.Millisecond
	foReconvMax  = 60 * time.Second // after a freeze, before the next phase
)

// foPick returns up to k non-exporters of site, from the end of the node
// list (the last started: the cold-peer phase sampled the first ones).
func foPick(nodes []scaleNode, site, k int) []*scaleNode {
	var out []*scaleNode
	for i := len(nodes) - 1; i >= 0 && len(out) < k; i-- {
		if i%scaleSites == site && !nodes[i].exporter {
			out = append(out, &nodes[i])
		}
	}
	return out
}

// foLoopsOn starts a client loop through each node's echo import.
func foLoopsOn(ctx context.Context, book *tagBook, ns []*scaleNode) *foLoops {
	var names, addrs []string
	for _, sn := range ns {
		names = append(names, sn.cfg.Name)
		addrs = append(addrs, sn.imp)
	}
	return startFOLoops(ctx, book, names, addrs, foConnTimeout)
}

// foFigures are what the client loops of one phase saw.
type foFigures struct {
	conns, failed int
	recovery      time.Duration // the slowest loop's foRecovery; -1 if a loop never recovered
	gap           time.Duration // the longest foMaxGap of any loop
	firstErr      string
}

func foSummarize(recs [][]foConn, cut time.Time, site int, end time.Time) foFigures {
	var f foFigures
	for _, rs := range recs {
		failed, ok := foFailed(rs)
		f.failed += failed
		f.conns += failed + ok
		for _, r := range rs {
			if !r.OK && f.firstErr == "" {
				f.firstErr = r.Err
			}
		}
		if d, ok := foRecovery(rs, cut, site); !ok || f.recovery < 0 {
			f.recovery = -1
		} else {
			f.recovery = max(f.recovery, d)
		}
		f.gap = max(f.gap, foMaxGap(rs, cut, end))
	}
	return f
}

// foPerLoop is each loop's foRecovery, "node 123.4 ms" ("never" if none).
func foPerLoop(ls *foLoops, cut time.Time, site int) string {
	var out []string
	for i, rs := range ls.records() {
		d, ok := foRecovery(rs, cut, site)
		v := "never"
		if ok {
			v = fmt.Sprintf("%.1f ms", ms(d))
		}
		out = append(out, ls.loops[i].name+" "+v)
	}
	return strings.Join(out, ", ")
}

func ms(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return bench.Round(float64(d)/float64(time.Millisecond), 1)
}

// scaleFailover runs the phases the options select.
func (r *run) scaleFailover(ctx context.Context, nodes []scaleNode, book *tagBook) {
	if r.o.ScaleDrill && ctx.Err() == nil {
		r.scaleDrill(ctx, nodes, book)
	}
	if r.o.ScaleSigstop && ctx.Err() == nil {
		r.scaleSigstop(ctx, nodes, book)
	}
	if r.o.ScalePartition && ctx.Err() == nil {
		r.scalePartition(ctx, nodes)
	}
}

// setImportSites rewrites sn's config with its echo import preferring
// sites and reloads it.
func setImportSites(ctx context.Context, sn *scaleNode, sites []string) error {
	c := sn.cfg
	c.Imports = slices.Clone(c.Imports)
	c.Imports[0].Sites = sites
	if err := os.WriteFile(sn.proc.Config, []byte(c.YAML()), 0o600); err != nil {
		return fmt.Errorf("scale: %s: %w", sn.cfg.Name, err)
	}
	if _, err := control.Reload(ctx, sn.proc.Sock); err != nil {
		return fmt.Errorf("scale: %s: %w", sn.cfg.Name, err)
	}
	return nil
}

// scaleDrill: a drill of s1 while importers that prefer s1 carry client
// loops. Keys scale_drill_*.
func (r *run) scaleDrill(ctx context.Context, nodes []scaleNode, book *tagBook) {
	res := r.res
	clients := foPick(nodes, 0, foClients)
	if len(clients) == 0 {
		res.Set("scale_drill_skipped", "no non-exporter in s0 (--nodes < 5)")
		return
	}
	fail := func(err error) {
		if ctx.Err() == nil { // an interrupt is not the mesh's failure
			r.addErrs("scale_drill_errors", 1, err)
		}
	}
	prefer := []string{"s1", "s2"}
	var reloaded []*scaleNode
	defer func() { // back to the base topology, also after an error
		for _, sn := range reloaded {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := setImportSites(cctx, sn, sn.cfg.Imports[0].Sites); err != nil {
				r.progress("scale: drill: restore %s: %v", sn.cfg.Name, err)
			}
			cancel()
		}
	}()
	for _, sn := range clients {
		if err := setImportSites(ctx, sn, prefer); err != nil {
			fail(err)
			return
		}
		reloaded = append(reloaded, sn)
	}
	res.Set("scale_drill_clients", len(clients))
	r.progress("scale: drill: %d importers outside s1 now prefer [s1, s2]; client loops through them, a new connection every %v", len(clients), foEvery)
	loops := foLoopsOn(ctx, book, clients)
	defer loops.Stop()
	if err := loops.waitServed(ctx, time.Now(), 1, foWarmOK, foWarmMax); err != nil {
		fail(fmt.Errorf("scale: drill: %w", err))
		return
	}
	if err := sleepCtx(ctx, foDrillSettle); err != nil {
		return
	}
	from := clients[0]
	r.progress("scale: drill: %s drills s1 for %v", from.cfg.Name, foDrillCut)
	sent := time.Now()
	cut := sent.Add(failover.DrillBaseline) // the drill cuts this long after the request; within the control socket's latency
	rep, err := control.Drill(ctx, from.proc.Sock, node.DrillRequest{Site: "s1", Service: "echo", DurationMS: foDrillCut.Milliseconds()})
	if err != nil {
		fail(fmt.Errorf("scale: drill from %s: %w", from.cfg.Name, err))
		return
	}
	sleepCtx(ctx, foTail)
	end := time.Now()
	loops.Stop()
	f := foSummarize(loops.records(), cut, 1, end)
	if len(rep.Services) != 1 {
		fail(fmt.Errorf("scale: drill from %s: report with %d services, want 1", from.cfg.Name, len(rep.Services)))
		return
	}
	s := rep.Services[0]
	res.Set("scale_drill_rto_ms", s.RTOMS)
	res.Set("scale_drill_failback_ms", s.FailbackMS)
	res.Set("scale_drill_probes", s.Probes)
	res.Set("scale_drill_probes_failed", s.Failed)
	res.Set("scale_drill_conns", f.conns)
	res.Set("scale_drill_failed", f.failed)
	res.Set("scale_drill_client_rto_ms", ms(f.recovery))
	res.Set("scale_drill_gap_max_ms", ms(f.gap))
	r.progress("scale: drill: report rto %d ms, failback %d ms, %d of %d probes failed (%s → %s → %s); clients: %d of %d connections failed, first served by another site %.1f ms after the cut, longest gap %.1f ms",
		s.RTOMS, s.FailbackMS, s.Failed, s.Probes, s.Before, s.During, s.After, f.failed, f.conns, ms(f.recovery), ms(f.gap))
	var tl []string
	for _, e := range s.Timeline {
		ev := fmt.Sprintf("%s %d..%d ms", e.Kind, e.AtMS, e.EndMS)
		if e.Kind == failover.EventServed {
			by := e.Node
			if len(e.Nodes) > 0 { // every node of the run, e.Node first
				by = strings.Join(e.Nodes, ",")
			}
			ev += fmt.Sprintf(" by %s (%s)", by, e.Site)
		}
		tl = append(tl, ev)
	}
	r.progress("scale: drill: the report's timeline: %s; clients: %s; each served by another site after the cut: %s",
		strings.Join(tl, "; "), foSummary(slices.Concat(loops.records()...), cut), foPerLoop(loops, cut, 1))
	if f.firstErr != "" {
		r.progress("scale: drill: first failed client connection: %s", f.firstErr)
	}
}

// scaleSigstop freezes n002 (s2's exporter) for foFreeze while importers
// of s2 carry client loops. Keys scale_sigstop_*.
func (r *run) scaleSigstop(ctx context.Context, nodes []scaleNode, book *tagBook) {
	res := r.res
	clients := foPick(nodes, 2, foClients)
	if len(clients) == 0 {
		res.Set("scale_sigstop_skipped", "no non-exporter in s2 (--nodes < 7)")
		return
	}
	fail := func(err error) {
		if ctx.Err() == nil { // an interrupt is not the mesh's failure
			r.addErrs("scale_sigstop_errors", 1, err)
		}
	}
	target := &nodes[2]
	res.Set("scale_sigstop_clients", len(clients))
	r.progress("scale: sigstop: client loops through %d importers of s2, a new connection every %v", len(clients), foEvery)
	loops := foLoopsOn(ctx, book, clients)
	defer loops.Stop()
	if err := loops.waitServed(ctx, time.Now(), 2, foWarmOK, foWarmMax); err != nil {
		fail(fmt.Errorf("scale: sigstop: %w", err))
		return
	}
	var stopAt time.Time
	var serr error
	loops.quiesce(func() {
		stopAt = time.Now()
		serr = target.proc.Signal(syscall.SIGSTOP)
	})
	if serr != nil {
		fail(fmt.Errorf("scale: sigstop: %w", serr))
		return
	}
	var thawOnce sync.Once
	thaw := func() { thawOnce.Do(func() { target.proc.Signal(syscall.SIGCONT) }) }
	defer thaw() // also on Ctrl-C: a frozen node would not stop
	r.progress("scale: sigstop: %s frozen for %v", target.cfg.Name, foFreeze)
	sleepCtx(ctx, foFreeze)
	thawAt := time.Now()
	thaw()
	back := loops.waitServed(ctx, thawAt, 2, 1, foBackMax)
	sleepCtx(ctx, foTail)
	end := time.Now()
	loops.Stop()
	recs := loops.records()
	f := foSummarize(recs, stopAt, 2, thawAt)
	res.Set("scale_sigstop_s", foFreeze.Seconds())
	res.Set("scale_sigstop_conns", f.conns)
	res.Set("scale_sigstop_failed", f.failed)
	res.Set("scale_sigstop_rto_ms", ms(f.recovery))
	res.Set("scale_sigstop_gap_max_ms", ms(foSummarize(recs, stopAt, 2, end).gap))
	failback := time.Duration(0)
	for _, rs := range recs {
		if d, ok := foBack(rs, thawAt, 2); ok && failback >= 0 {
			failback = max(failback, d)
		} else {
			failback = -1
		}
	}
	res.Set("scale_sigstop_failback_ms", ms(failback))
	r.progress("scale: sigstop: clients first served by another site %.1f ms after the stop (longest gap %.1f ms), %d of %d connections failed; back on s2 %.1f ms after SIGCONT",
		ms(f.recovery), ms(foSummarize(recs, stopAt, 2, end).gap), f.failed, f.conns, ms(failback))
	r.progress("scale: sigstop: clients after the stop: %s; each served by another site after the stop: %s",
		foSummary(slices.Concat(recs...), stopAt), foPerLoop(loops, stopAt, 2))
	if f.firstErr != "" {
		r.progress("scale: sigstop: first failed client connection: %s", f.firstErr)
	}
	if back != nil {
		r.progress("scale: sigstop: %v", back)
	}
	// Before the next phase: every node sees all others alive again.
	conv, seen, err := scaleConvergeWithin(ctx, nodes, thawAt, foReconvMax)
	if err != nil {
		fail(fmt.Errorf("scale: sigstop: after SIGCONT: %w", err))
		return
	}
	res.Set("scale_sigstop_reconverge_s", bench.Round(conv.Seconds(), 3))
	res.Set("scale_sigstop_reconverge_seen_s", bench.Round(seen.Seconds(), 3))
	r.progress("scale: sigstop: all nodes see all others alive %.2fs after SIGCONT (status reads showed it after %.2fs)", conv.Seconds(), seen.Seconds())
}

// scalePartition splits the mesh in two halves with nft and measures the
// heal. Keys scale_partition_*.
func (r *run) scalePartition(ctx context.Context, nodes []scaleNode) {
	res := r.res
	if why := partitionPossible(); why != "" {
		res.Set("scale_partition_skipped", why)
		r.progress("scale: partition skipped: %s", why)
		return
	}
	removeStaleTables()
	fail := func(err error) {
		if ctx.Err() == nil { // an interrupt is not the mesh's failure
			r.addErrs("scale_partition_errors", 1, err)
		}
	}
	half := func(i int) int { return (i % scaleSites) / 2 } // 0: s0, s1; 1: s2, s3
	var a, b, gossip []int
	for i, sn := range nodes {
		ports := []int{port(sn.cfg.GossipBind), port(sn.cfg.TunnelListen)}
		if half(i) == 0 {
			a = append(a, ports...)
		} else {
			b = append(b, ports...)
		}
		gossip = append(gossip, ports[0])
	}
	table := partitionTable()
	removed := false
	remove := func() {
		if !removed {
			removed = true
			if err := nftDeleteTable(table); err != nil {
				r.addErrs("scale_partition_errors", 1, err) // also after an interrupt: the rules stay
			}
		}
	}
	defer remove()
	if err := nftApply(ctx, partitionRules(table, a, b, gossip)); err != nil {
		fail(err)
		return
	}
	splitAt := time.Now()
	wait := foSplitWait(len(nodes))
	r.progress("scale: partition: {s0,s1} and {s2,s3} split (nft table inet %s); waiting up to %v for each half to see the other not alive", table, wait)
	split, why := r.waitSplit(ctx, nodes, half, wait)
	if split {
		res.Set("scale_partition_split_s", bench.Round(time.Since(splitAt).Seconds(), 3))
	} else {
		res.Set("scale_partition_split_s", -1)
		r.progress("scale: partition: not split within %v: %s", wait, why)
	}
	held := time.Since(splitAt)
	remove()
	healAt := time.Now()
	res.Set("scale_partition_held_s", bench.Round(held.Seconds(), 3))
	r.progress("scale: partition: healed after %.1fs; waiting for every node to see all others alive", held.Seconds())
	conv, seen, err := scaleConverge(ctx, nodes, healAt)
	if err != nil {
		fail(fmt.Errorf("scale: partition: after the heal: %w", err))
		return
	}
	res.Set("scale_partition_heal_s", bench.Round(conv.Seconds(), 3))
	res.Set("scale_partition_heal_seen_s", bench.Round(seen.Seconds(), 3))
	r.progress("scale: partition: all nodes see all others alive %.2fs after the heal (status reads showed it after %.2fs)", conv.Seconds(), seen.Seconds())
}

// foSplitWait is how long the partition waits for the split with n nodes.
func foSplitWait(n int) time.Duration { return max(foSplitMin, time.Duration(n)*foSplitProbe) }

// waitSplit polls the nodes until each sees no node of the other half
// alive, for at most d; why says who still does.
func (r *run) waitSplit(ctx context.Context, nodes []scaleNode, half func(int) int, d time.Duration) (bool, string) {
	idx := make(map[string]int, len(nodes))
	for i, sn := range nodes {
		idx[sn.cfg.Name] = i
	}
	done := make([]bool, len(nodes))
	deadline := time.Now().Add(d)
	why := ""
	for ctx.Err() == nil && time.Now().Before(deadline) {
		round := time.Now()
		var mu sync.Mutex
		why = ""
		forEach(nodes, func(i int, sn *scaleNode) {
			if done[i] {
				return
			}
			st, err := sn.proc.Status(ctx)
			seen := 0
			for _, p := range st.Peers {
				if j, ok := idx[p.Name]; ok && half(j) != half(i) && p.State == "alive" {
					seen++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil && seen == 0 {
				done[i] = true
			} else if why == "" {
				why = fmt.Sprintf("%s sees %d of the other half alive (%v)", sn.cfg.Name, seen, err)
			}
		})
		if !slices.Contains(done, false) {
			return true, ""
		}
		time.Sleep(max(250*time.Millisecond, time.Since(round)))
	}
	return false, why
}
