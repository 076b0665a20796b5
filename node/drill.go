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
	"github.com/meshd/meshd/internal/ratelimit"
	"github.com/meshd/meshd/internal/statuspage"
	"github.com/meshd/meshd/internal/wire"
)

// Drill timing (docs/formats.md); the rest is in failover (DrillRun).
const (
	DefaultDrillDuration = failover.DefaultDrillDuration
	drillHoleCheck       = 100 * time.Millisecond
)

// ErrDrillOwnSite: a drill of the drilling node's own site is refused
// (docs/formats.md): its imports could not watch the failover.
var ErrDrillOwnSite = errors.New("drill of the own site refused")

// DrillRequest asks this node to run a drill (POST /drill).
type DrillRequest struct {
	Site       string `json:"site"`
	Service    string `json:"service,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// Drill runs a failover drill from this node (docs/formats.md): every node of
// req.Site black-holes its tunnel traffic to and from nodes outside the
// site for the duration, while this node probes its imports (or only
// req.Service) every 100 ms through the same selection and failover path a
// client connection takes. It returns when failback was seen (or a tail
// window passed). If ctx (or the node) ends early, the drill is cancelled
// on every node. The sequence and timing are failover.DrillRun's; this is
// the wiring.
func (n *Node) Drill(ctx context.Context, req DrillRequest) (failover.Report, error) {
	d := time.Duration(req.DurationMS) * time.Millisecond
	if d == 0 {
		d = DefaultDrillDuration
	}
	if d < 0 || d > failover.MaxDrillDuration {
		return failover.Report{}, fmt.Errorf("drill duration %v not allowed: use 1ms..%v", d, failover.MaxDrillDuration)
	}
	imps, targets, err := n.drillScope(req)
	if err != nil {
		return failover.Report{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(n.ctx, cancel)()

	var (
		order failover.DrillOrder
		live  *statuspage.Live
		run   = &failover.DrillRun{Site: req.Site, Duration: d}
	)
	byName := make(map[string]config.Import, len(imps))
	for _, im := range imps {
		run.Services = append(run.Services, im.Name)
		byName[im.Name] = im
	}
	run.Probe = func(ctx context.Context, service string, rr uint64) (failover.Endpoint, error) {
		c, ep, err := n.connect(ctx, byName[service], wire.FlagProbe, rr, func(string) int64 { return 0 })
		if c != nil {
			c.Close()
		}
		return ep, err
	}
	run.Cut = func(start time.Time) error {
		order = failover.DrillOrder{ID: failover.NewDrillID(), Site: req.Site, Duration: d, Issued: start, Origin: n.cfg.Name}
		if err := n.sendDrillOrder(order, targets, false); err != nil {
			return err
		}
		live = n.drills.Start(start, func() failover.Report { rep, _ := run.Snapshot(); return rep })
		n.log.Info("drill started", "site", req.Site, "duration", d, "nodes", len(targets))
		if set := n.pki.Load(); set != nil && !set.Cert.Drill {
			n.log.Warn("this node's certificate lacks the drill capability: other nodes refuse its drill orders")
		}
		return nil
	}
	run.Cancel = func() {
		order.Cancel = true
		n.sendDrillOrder(order, targets, false)
		n.log.Warn("drill interrupted; cancelled on every node", "site", req.Site)
	}
	rep, err := run.Run(ctx)
	if err != nil {
		if live != nil {
			n.drills.Abort(live)
		}
		return failover.Report{}, err
	}
	n.drills.Finish(live, rep)
	var ds []metrics.DrillService
	for _, s := range rep.Services {
		ds = append(ds, metrics.DrillService{Name: s.Name, Failed: s.Failed, RTO: msDuration(s.RTOMS), Failback: msDuration(s.FailbackMS)})
	}
	n.metrics.Drill(req.Site, ds)
	return rep, nil
}

// drillScope checks req against this node's imports and the catalog and
// returns the imports to probe and the alive nodes of the drilled site.
func (n *Node) drillScope(req DrillRequest) ([]config.Import, []string, error) {
	if req.Site == "" {
		return nil, nil, errors.New("drill needs a site")
	}
	if req.Site == n.cfg.Site {
		return nil, nil, fmt.Errorf("%w: %q is this node's site; run the drill from a node outside it", ErrDrillOwnSite, req.Site)
	}
	var imps []config.Import
	for _, im := range n.Config().Imports {
		if req.Service == "" || im.Name == req.Service {
			imps = append(imps, im)
		}
	}
	if len(imps) == 0 {
		if req.Service != "" {
			return nil, nil, fmt.Errorf("unknown service %q: this node has no import of that name", req.Service)
		}
		return nil, nil, errors.New("this node has no imports to probe; run the drill from a node that imports services")
	}
	var targets []string
	for _, m := range n.catalog.Load().members {
		if m.Meta.Site == req.Site && m.State == gossip.StateAlive {
			targets = append(targets, m.Name)
		}
	}
	if len(targets) == 0 {
		return nil, nil, fmt.Errorf("no alive node in site %q", req.Site)
	}
	return imps, targets, nil
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
//
// While a cut is in force it is re-applied every drillHoleCheck (members
// that joined meanwhile are cut too, and the cut ends on time); with none
// in force nothing ticks.
func (n *Node) receiveDrills() {
	tick := time.NewTicker(drillHoleCheck)
	tick.Stop()
	defer tick.Stop()
	// Orders come from any holder of the cluster key: their log lines are
	// bounded overall (a line a second, with the count left out), not only
	// per origin, which the sender chooses.
	gate := ratelimit.NewEvery(time.Second)
	for {
		select {
		case <-n.ctx.Done():
			return
		case msg := <-n.gsp.Messages():
			n.receiveDrill(msg, gate)
			if n.cutInForce() { // tick while a cut is in force
				tick.Reset(drillHoleCheck)
			}
		case <-tick.C:
			n.syncBlackhole()
			if !n.cutInForce() {
				tick.Stop()
			}
		}
	}
}

// receiveDrill checks and applies one drill order from gossip; gate bounds
// the log lines of rejected and refused orders.
func (n *Node) receiveDrill(msg []byte, gate *ratelimit.Every) {
	now := time.Now()
	sealed, sig, err := failover.SplitSignedDrillOrder(msg)
	var o failover.DrillOrder
	if err == nil {
		o, err = n.openDrillOrder(sealed)
	}
	if err != nil {
		if ok, suppressed := gate.Allow(now); ok {
			n.log.Warn("drill order rejected", "err", err, "suppressed", suppressed)
		}
		return
	}
	if err := n.authorizeDrill(o, sealed, sig); err != nil {
		if n.refusals.allow("drill:"+o.Origin, err.Error(), now) {
			if ok, suppressed := gate.Allow(now); ok {
				n.log.Warn("drill order refused: nothing cut", "origin", o.Origin, "site", o.Site, "reason", err.Error(),
					"suppressed", suppressed)
			}
		}
		return
	}
	n.applyDrillOrder(o)
}

// cutInForce reports whether a drill's black hole is applied.
func (n *Node) cutInForce() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.holeActive
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
