package node

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/wire"
	"github.com/meshd/meshd/tunnel"
)

// Exporter timeouts.
const (
	headerTimeout      = 10 * time.Second // a peer must send its open request within this
	backendDialTimeout = 5 * time.Second
)

// exporter is one of this node's exports.
type exporter struct {
	n             *Node
	cfg           config.Export
	healthy       atomic.Bool  // last health check result (true without a check)
	active        atomic.Int64 // streams being served
	served        atomic.Uint64
	checkFailures atomic.Uint64 // failed health checks, for metrics
}

func newExporter(n *Node, cfg config.Export) *exporter {
	e := &exporter{n: n, cfg: cfg}
	e.healthy.Store(true)
	return e
}

// dialTarget dials the export's local target.
func (e *exporter) dialTarget(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig(clientKeepAlive)}
	return d.DialContext(ctx, "tcp", e.cfg.Target)
}

// checkOnce runs the health check once and records the result; it reports
// whether the health changed.
func (e *exporter) checkOnce() bool {
	if e.cfg.Check == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.Check.Timeout)
	c, err := e.dialTarget(ctx)
	cancel()
	ok := err == nil
	if ok {
		c.Close()
	} else {
		e.checkFailures.Add(1)
	}
	if e.healthy.Swap(ok) == ok {
		return false
	}
	if ok {
		e.n.log.Info("export healthy again", "export", e.cfg.Name, "target", e.cfg.Target)
	} else {
		e.n.log.Warn("export unhealthy; withdrawn from the catalog", "export", e.cfg.Name, "target", e.cfg.Target, "err", err)
	}
	return true
}

// checkLoop runs the health check every interval until the node stops.
func (e *exporter) checkLoop() {
	tick := time.NewTicker(e.cfg.Check.Interval)
	defer tick.Stop()
	for {
		select {
		case <-e.n.ctx.Done():
			return
		case <-tick.C:
		}
		if e.checkOnce() {
			e.n.publishExports()
			e.n.rebuildCatalog()
		}
	}
}

// handleStream serves one stream a peer opened: read the open request,
// dial the export's target, answer, then proxy.
func (n *Node) handleStream(peer key.PublicKey, s net.Conn) {
	s.SetDeadline(time.Now().Add(headerTimeout))
	req, err := wire.ReadRequest(s)
	if err != nil {
		n.log.Debug("bad stream open request", "peer", peer.ShortString(), "err", err)
		if errors.Is(err, wire.ErrVersion) || errors.Is(err, wire.ErrKind) || errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTooLarge) {
			wire.WriteResponse(s, wire.Response{Status: wire.StatusBadRequest, Node: n.cfg.Name, Message: err.Error()})
		}
		s.Close()
		return
	}
	if n.draining.Load() {
		wire.WriteResponse(s, wire.Response{Status: wire.StatusDenied, Node: n.cfg.Name, Message: "draining: node is shutting down"})
		s.Close()
		return
	}
	e := n.exports[req.Service]
	if e == nil {
		wire.WriteResponse(s, wire.Response{Status: wire.StatusUnknownService, Node: n.cfg.Name,
			Message: "no export named " + req.Service})
		s.Close()
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, backendDialTimeout)
	backend, err := e.dialTarget(ctx)
	cancel()
	if err != nil {
		wire.WriteResponse(s, wire.Response{Status: wire.StatusBackendRefused, Node: n.cfg.Name, Message: err.Error()})
		s.Close()
		return
	}
	if err := wire.WriteResponse(s, wire.Response{Status: wire.StatusOK, Node: n.cfg.Name}); err != nil || req.Flags&wire.FlagProbe != 0 {
		backend.Close()
		s.Close()
		return
	}
	s.SetDeadline(time.Time{})
	e.active.Add(1)
	e.served.Add(1)
	// The node's WaitGroup owns the proxy: this goroutine runs inside the
	// tunnel's stream handler, which Close waits for before n.wg.Wait.
	n.wg.Add(1)
	tunnel.StartProxy(n.ctx, s, backend, func(in, out int64, err error) {
		n.broken.report("export", req.Service, peer.ShortString(), out, in, err)
		e.active.Add(-1)
		n.wg.Done()
	})
}
