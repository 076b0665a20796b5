package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/procs"
	"github.com/meshd/meshd/internal/proxyproto"
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
	conf          atomic.Pointer[config.Export] // replaced by a reload; read with cfg()
	healthy       atomic.Bool                   // last health check result (true without a check)
	active        atomic.Int64                  // streams being served
	served        atomic.Uint64
	denied        atomic.Uint64 // streams refused by the allow list
	checkFailures atomic.Uint64 // failed health checks, for metrics
	slots         atomic.Int64  // streams holding one of max_conns (limits.go)
	kick          chan struct{} // cap 1: the config changed, re-read it and check now
	gone          chan struct{} // closed when a reload removed the export: the check loop ends
}

func newExporter(n *Node, cfg config.Export) *exporter {
	e := &exporter{n: n, kick: make(chan struct{}, 1), gone: make(chan struct{})}
	e.conf.Store(&cfg)
	e.healthy.Store(true)
	return e
}

// cfg returns the export's current configuration (a reload may replace it;
// a connection reads it once).
func (e *exporter) cfg() *config.Export { return e.conf.Load() }

// setConfig replaces the export's configuration and wakes its check loop.
func (e *exporter) setConfig(c config.Export) {
	e.conf.Store(&c)
	if c.Check == nil {
		e.healthy.Store(true) // check: false: never withdrawn for health
	}
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// dialTarget dials the export's local target.
func (e *exporter) dialTarget(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig(clientKeepAlive)}
	return d.DialContext(ctx, "tcp", e.cfg().Target)
}

// sendProxyHeader writes the PROXY protocol header of the export's
// proxy_protocol (none when it is "") for a client at src that connected to
// dst to the freshly dialled backend; on error it closes backend.
func (e *exporter) sendProxyHeader(backend net.Conn, src, dst netip.AddrPort) error {
	pp := e.cfg().ProxyProtocol
	if pp == "" {
		return nil
	}
	h, err := proxyproto.Header(pp, src, dst)
	if err == nil {
		backend.SetWriteDeadline(time.Now().Add(backendDialTimeout))
		_, err = backend.Write(h)
		backend.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		backend.Close()
		return fmt.Errorf("send PROXY %s header: %w", pp, err)
	}
	return nil
}

// checkOnce runs the health check once and records the result; it reports
// whether the health changed.
func (e *exporter) checkOnce() bool {
	cfg := e.cfg()
	if cfg.Check == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Check.Timeout)
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
		e.n.log.Info("export healthy again", "export", cfg.Name, "target", cfg.Target)
	} else {
		e.n.log.Warn("export unhealthy; withdrawn from the catalog", "export", cfg.Name, "target", cfg.Target, "err", err)
	}
	return true
}

// checkLoop runs the health check every interval until the node stops or
// a reload removes the export. A reload that changes the check kicks it: it
// re-reads the config and checks at once; without a check it only waits.
func (e *exporter) checkLoop() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		t.Stop()
		if c := e.cfg().Check; c != nil {
			t.Reset(c.Interval)
		}
		select {
		case <-e.n.ctx.Done():
			return
		case <-e.gone:
			return
		case <-e.kick:
		case <-t.C:
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
	release, ok := n.admitStream(peer, s)
	if !ok {
		return
	}
	end := procs.Begin() // the scheduler's full width while a stream is carried
	admitted := release
	release = func() { end(); admitted() }
	proxied := false
	defer func() {
		if !proxied {
			release()
		}
	}()
	s.SetDeadline(time.Now().Add(headerTimeout))
	req, err := wire.ReadRequest(s)
	if err != nil {
		n.log.Debug("bad stream open request", "peer", n.peerName(peer), "err", err)
		if errors.Is(err, wire.ErrVersion) || errors.Is(err, wire.ErrKind) || errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTooLarge) {
			wire.WriteResponse(s, wire.Response{Status: wire.StatusBadRequest, Node: n.cfg.Name, Message: err.Error()})
		}
		s.Close()
		return
	}
	if req.Ping() {
		// meshd ping: a round trip through the tunnel, nothing dialled.
		wire.WriteResponse(s, wire.Response{Status: wire.StatusOK, Node: n.cfg.Name})
		s.Close()
		return
	}
	e, slot, refusal := n.exportFor(peer, req)
	if refusal != nil {
		wire.WriteResponse(s, *refusal)
		s.Close()
		return
	}
	stream := release
	release = func() { slot(); stream() }
	ctx, cancel := context.WithTimeout(n.ctx, backendDialTimeout)
	backend, err := e.dialTarget(ctx)
	cancel()
	if err == nil && req.Flags&wire.FlagProbe == 0 {
		err = e.sendProxyHeader(backend, req.Source, req.Dest)
	}
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
	proxied = true
	tunnel.StartProxy(n.ctx, s, backend, func(in, out int64, err error) {
		n.broken.report("export", req.Service, n.peerName(peer), out, in, err)
		e.active.Add(-1)
		release()
		n.wg.Done()
	})
}

// exportFor finds the export req opens and admits the stream to it: it
// returns the export and the release of its max_conns slot, or the
// response refusing the stream (draining, maintenance, unknown service,
// the allow list, max_conns).
func (n *Node) exportFor(peer key.PublicKey, req wire.Request) (*exporter, func(), *wire.Response) {
	if n.draining.Load() {
		return nil, nil, &wire.Response{Status: wire.StatusDenied, Node: n.cfg.Name, Message: "draining: node is shutting down"}
	}
	if n.maint.Load() {
		return nil, nil, &wire.Response{Status: wire.StatusDenied, Node: n.cfg.Name, Message: MaintenanceMessage}
	}
	e := n.exportMap()[req.Service]
	if e == nil {
		return nil, nil, &wire.Response{Status: wire.StatusUnknownService, Node: n.cfg.Name,
			Message: "no export named " + req.Service}
	}
	if ok, who := n.mayConnect(peer, e.cfg().Allow); !ok {
		e.denied.Add(1)
		if n.refusals.allow("deny:"+who+"/"+req.Service, "", time.Now()) {
			n.log.Warn("stream denied by the export's allow list", "export", req.Service, "node", who)
		}
		return nil, nil, &wire.Response{Status: wire.StatusNotAllowed, Node: n.cfg.Name,
			Message: who + " is not in the allow list of " + req.Service}
	}
	slot, ok := e.exportSlot()
	if !ok {
		n.lim.exportRefused.Add(1)
		logLimited(n.log, n.lim.exportLog, "limits: stream refused: export at max_conns", "export", req.Service,
			"max", e.cfg().MaxConns, "peer", n.peerName(peer))
		return nil, nil, &wire.Response{Status: wire.StatusDenied, Node: n.cfg.Name,
			Message: fmt.Sprintf("export %s has max_conns (%d) connections", req.Service, e.cfg().MaxConns)}
	}
	return e, slot, nil
}
