package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/metrics"
	"github.com/meshd/meshd/internal/wire"
)

// Drill timing (SPEC §6).
const (
	DefaultDrillDuration = 20 * time.Second
	drillProbeEvery      = 100 * time.Millisecond
	drillProbeTimeout    = 3 * time.Second
	drillBaseline        = 550 * time.Millisecond // probes before the cut, for "before"; off the probe tick
	drillMaxTail         = 15 * time.Second       // how long to wait for failback after the restore
	drillHoleCheck       = 100 * time.Millisecond
)

// ErrDrillOwnSite: a drill of the drilling node's own site is refused
// (SPEC §6): its imports could not watch the failover.
var ErrDrillOwnSite = errors.New("drill of the own site refused")

// DrillRequest asks this node to run a drill (POST /drill).
type DrillRequest struct {
	Site       string `json:"site"`
	Service    string `json:"service,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// Drill runs a failover drill from this node (SPEC §6): every node of
// req.Site black-holes its tunnel traffic to and from nodes outside the
// site for the duration, while this node probes its imports (or only
// req.Service) every 100 ms through the same selection and failover path a
// client connection takes. It returns when failback was seen (or a tail
// window passed). If ctx ends early, the drill is cancelled on every node.
func (n *Node) Drill(ctx context.Context, req DrillRequest) (failover.Report, error) {
	d := time.Duration(req.DurationMS) * time.Millisecond
	if d == 0 {
		d = DefaultDrillDuration
	}
	if d < 0 || d > failover.MaxDrillDuration {
		return failover.Report{}, fmt.Errorf("drill duration %v not allowed: use 1ms..%v", d, failover.MaxDrillDuration)
	}
	if req.Site == "" {
		return failover.Report{}, errors.New("drill needs a site")
	}
	if req.Site == n.cfg.Site {
		return failover.Report{}, fmt.Errorf("%w: %q is this node's site; run the drill from a node outside it", ErrDrillOwnSite, req.Site)
	}
	var imps []config.Import
	for _, im := range n.Config().Imports {
		if req.Service == "" || im.Name == req.Service {
			imps = append(imps, im)
		}
	}
	if len(imps) == 0 {
		if req.Service != "" {
			return failover.Report{}, fmt.Errorf("unknown service %q: this node has no import of that name", req.Service)
		}
		return failover.Report{}, errors.New("this node has no imports to probe; run the drill from a node that imports services")
	}
	var targets []string
	for _, m := range n.catalog.Load().members {
		if m.Meta.Site == req.Site && m.State == gossip.StateAlive {
			targets = append(targets, m.Name)
		}
	}
	inSite := req.Site == n.cfg.Site
	if len(targets) == 0 && !inSite {
		return failover.Report{}, fmt.Errorf("no alive node in site %q", req.Site)
	}

	pctx, stopProbes := context.WithCancel(n.ctx)
	defer stopProbes()
	pr := &prober{n: n}
	for _, im := range imps {
		pr.start(pctx, im)
	}
	if !sleepCtx(ctx, drillBaseline) {
		return failover.Report{}, ctx.Err()
	}

	order := failover.DrillOrder{ID: failover.NewDrillID(), Site: req.Site, Duration: d, Issued: time.Now(), Origin: n.cfg.Name}
	start := time.Now()
	if err := n.sendDrillOrder(order, targets, inSite); err != nil {
		return failover.Report{}, err
	}
	live := n.drills.Start(start, func() failover.Report {
		return failover.Summarize(req.Site, start, start.Add(d), pr.results())
	})
	defer n.drills.Abort(live) // a no-op once Finish recorded it
	n.log.Info("drill started", "site", req.Site, "duration", d, "nodes", len(targets))
	if set := n.pki.Load(); set != nil && !set.Cert.Drill {
		n.log.Warn("this node's certificate lacks the drill capability: other nodes refuse its drill orders")
	}
	if !sleepCtx(ctx, d) {
		order.Cancel = true
		n.sendDrillOrder(order, targets, inSite)
		n.log.Warn("drill interrupted; cancelled on every node", "site", req.Site)
		return failover.Report{}, ctx.Err()
	}
	restore := start.Add(d)
	n.log.Info("drill over; waiting for failback", "site", req.Site)

	// Wait for every service to be served by the drilled site again.
	tailEnd := time.Now().Add(drillMaxTail)
	for time.Now().Before(tailEnd) && !pr.failedBack(req.Site, restore, imps) {
		if !sleepCtx(ctx, drillProbeEvery) {
			break
		}
	}
	stopProbes()
	pr.wait()
	rep := failover.Summarize(req.Site, start, restore, pr.results())
	n.drills.Finish(live, rep)
	var ds []metrics.DrillService
	for _, s := range rep.Services {
		ds = append(ds, metrics.DrillService{Name: s.Name, Failed: s.Failed, RTO: msDuration(s.RTOMS), Failback: msDuration(s.FailbackMS)})
	}
	n.metrics.Drill(req.Site, ds)
	return rep, nil
}

func msDuration(ms int64) time.Duration {
	if ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

// sendDrillOrder delivers a sealed order to the targets over gossip's
// encrypted reliable channel (and applies it here when this node is in the
// site). It fails only if no node could be told.
func (n *Node) sendDrillOrder(o failover.DrillOrder, targets []string, local bool) error {
	sealed, err := o.Seal(n.Config().Cluster.Key)
	if err != nil {
		return fmt.Errorf("seal drill order: %w", err)
	}
	sealed = failover.SignDrillOrder(sealed, n.signKey)
	var wg sync.WaitGroup
	errs := make([]error, len(targets))
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.gsp.SendTo(t, sealed)
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		if err != nil {
			n.log.Warn("drill order not delivered", "node", targets[i], "err", err)
		} else {
			ok++
		}
	}
	if local {
		n.applyDrillOrder(o)
		ok++
	}
	if ok == 0 {
		return fmt.Errorf("drill order reached no node of site %s: %w", o.Site, errors.Join(errs...))
	}
	return nil
}

// receiveDrills executes drill orders from other nodes and keeps the
// tunnel's black hole in step with them; a cut ends by itself when its
// time is up, even if the node that ordered it is gone.
func (n *Node) receiveDrills() {
	tick := time.NewTicker(drillHoleCheck)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case msg := <-n.gsp.Messages():
			sealed, sig, err := failover.SplitSignedDrillOrder(msg)
			var o failover.DrillOrder
			if err == nil {
				o, err = n.openDrillOrder(sealed)
			}
			if err != nil {
				n.log.Warn("drill order rejected", "err", err)
				continue
			}
			if err := n.authorizeDrill(o, sealed, sig); err != nil {
				if n.refusals.allow("drill:"+o.Origin, err.Error(), time.Now()) {
					n.log.Warn("drill order refused: nothing cut", "origin", o.Origin, "site", o.Site, "reason", err.Error())
				}
				continue
			}
			n.applyDrillOrder(o)
		case <-tick.C:
			n.syncBlackhole()
		}
	}
}

func (n *Node) applyDrillOrder(o failover.DrillOrder) {
	if o.Site != n.cfg.Site {
		n.log.Warn("drill order for another site ignored", "site", o.Site, "origin", o.Origin)
		return
	}
	until := n.holes.Apply(o, time.Now())
	switch {
	case o.Cancel:
		n.log.Info("drill cancelled", "origin", o.Origin)
	case !until.IsZero():
		n.log.Warn("drill: cutting this site's links to other sites", "origin", o.Origin, "until", until.Format(time.RFC3339Nano))
	}
	n.syncBlackhole()
}

// syncBlackhole black-holes every peer outside this site while a drill of
// this site is active, and restores them when it is not.
func (n *Node) syncBlackhole() {
	_, _, active := n.holes.Active(time.Now())
	var pubs []key.PublicKey
	if active {
		for _, m := range n.catalog.Load().members {
			if m.Meta.Site != n.cfg.Site && !m.Meta.PublicKey.IsZero() {
				pubs = append(pubs, m.Meta.PublicKey)
			}
		}
	}
	n.mu.Lock()
	was := n.holeActive
	n.holeActive = active
	n.mu.Unlock()
	if was && !active {
		n.log.Info("drill over: links to other sites restored")
	}
	if active || was {
		n.tun.SetBlackhole(pubs)
	}
}

// prober runs a drill's probes: one new connection per import every
// drillProbeEvery, through the same selection and failover as clients.
type prober struct {
	n  *Node
	wg sync.WaitGroup

	mu     sync.Mutex
	probes map[string][]failover.Probe // guarded by mu
}

func (p *prober) start(ctx context.Context, im config.Import) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(drillProbeEvery)
		defer tick.Stop()
		var rr uint64
		for {
			rr++
			p.wg.Add(1)
			go func(rr uint64) {
				defer p.wg.Done()
				p.probe(ctx, im, rr)
			}(rr)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func (p *prober) probe(ctx context.Context, im config.Import, rr uint64) {
	at := time.Now()
	pctx, cancel := context.WithTimeout(ctx, drillProbeTimeout)
	defer cancel()
	c, ep, err := p.n.connect(pctx, im, wire.FlagProbe, rr, func(string) int64 { return 0 })
	if ctx.Err() != nil {
		if c != nil {
			c.Close()
		}
		return // the drill is over; this probe says nothing
	}
	pb := failover.Probe{At: at, Latency: time.Since(at), OK: err == nil}
	if err != nil {
		pb.Err = err.Error()
	} else {
		c.Close()
		pb.Node, pb.Site = ep.Node, ep.Site
	}
	p.mu.Lock()
	if p.probes == nil {
		p.probes = make(map[string][]failover.Probe)
	}
	p.probes[im.Name] = append(p.probes[im.Name], pb)
	p.mu.Unlock()
}

func (p *prober) wait() { p.wg.Wait() }

// failedBack reports whether every import has an OK probe from site,
// started after restore.
func (p *prober) failedBack(site string, restore time.Time, imps []config.Import) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, im := range imps {
		ok := false
		for _, pb := range p.probes[im.Name] {
			if pb.OK && pb.Site == site && pb.At.After(restore) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (p *prober) results() map[string][]failover.Probe {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]failover.Probe, len(p.probes))
	for k, v := range p.probes {
		out[k] = append([]failover.Probe(nil), v...)
	}
	return out
}

// sleepCtx sleeps for d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
