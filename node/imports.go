package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/procs"
	"github.com/meshd/meshd/internal/wire"
	"github.com/meshd/meshd/tunnel"
)

// errDenied is an exporter's refusal by its allow list: the client's
// connection is closed without trying other endpoints.
var errDenied = errors.New("denied")

// importer is one of this node's imports: a local listener whose every
// connection becomes one stream to an endpoint of the service.
type importer struct {
	n    *Node
	conf atomic.Pointer[config.Import] // replaced by a reload; read with cfg()
	ln   net.Listener

	rr     atomic.Uint64
	active atomic.Int64
	total  atomic.Uint64
	failed atomic.Uint64
	denied atomic.Uint64          // refused by an exporter's allow list (README "Identity and policy")
	last   atomic.Pointer[string] // node that served the last connection
	gate   *importGate            // max_conns, rate, burst (limits.go)

	mu         sync.Mutex
	noExporter atomic.Bool // "no node exports" was logged; cleared by the next connection served

	perNode map[string]*atomic.Int64 // guarded by mu; active connections per endpoint node
	closed  bool                     // guarded by mu
}

func newImporter(n *Node, cfg config.Import) (*importer, error) {
	ln, err := clientKeepAlive.listen("tcp", cfg.Listen.String())
	if err != nil {
		return nil, fmt.Errorf("node: import %s: listen %s: %w", cfg.Name, cfg.Listen, err)
	}
	im := &importer{n: n, ln: ln, perNode: make(map[string]*atomic.Int64), gate: newImportGate(cfg)}
	im.conf.Store(&cfg)
	return im, nil
}

// cfg returns the import's current configuration (a reload may replace
// it; a connection reads it once).
func (im *importer) cfg() *config.Import { return im.conf.Load() }

// lastEndpoint is the node that served the last connection, "" before
// the first.
func (im *importer) lastEndpoint() string {
	if p := im.last.Load(); p != nil {
		return *p
	}
	return ""
}

func (im *importer) close() {
	im.mu.Lock()
	im.closed = true
	im.mu.Unlock()
	im.ln.Close()
}

// serve accepts client connections until the listener closes.
func (im *importer) serve() {
	var wg sync.WaitGroup
	defer wg.Wait()
	backoff := 5 * time.Millisecond
	for {
		c, err := im.ln.Accept()
		if err != nil {
			if isClosedErr(err) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			im.n.log.Warn("import accept", "import", im.cfg().Name, "err", err)
			select {
			case <-im.n.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if why := im.gate.admit(im.cfg(), time.Now()); why != "" {
			c.Close() // at once, not queued (README "Hostile input and limits")
			logLimited(im.n.log, im.gate.log, "limits: import connection refused: "+why, "import", im.cfg().Name,
				"client", c.RemoteAddr().String())
			continue
		}
		wg.Add(1)
		go im.handle(c, func() { im.gate.done(); wg.Done() })
	}
}

func (im *importer) nodeCounter(node string) *atomic.Int64 {
	im.mu.Lock()
	defer im.mu.Unlock()
	c := im.perNode[node]
	if c == nil {
		c = new(atomic.Int64)
		im.perNode[node] = c
	}
	return c
}

// activeTo returns this import's active connections through node.
func (im *importer) activeTo(node string) int64 {
	im.mu.Lock()
	defer im.mu.Unlock()
	if c := im.perNode[node]; c != nil {
		return c.Load()
	}
	return 0
}

// handle connects one client to the best reachable endpoint and starts
// proxying; it returns while the proxy runs and calls finished when the
// connection has ended.
func (im *importer) handle(client net.Conn, finished func()) {
	end := procs.Begin() // the scheduler's full width while a connection is carried
	done := finished
	finished = func() { end(); done() }
	im.total.Add(1)
	im.active.Add(1)

	cfg := *im.cfg()
	start := time.Now()
	conn, ep, err := im.connectWaiting(withClient(im.n.ctx, client), cfg)
	if err == nil {
		im.n.metrics.ImportConnected(cfg.Name, time.Since(start))
	}
	if err != nil && errors.Is(err, errDenied) {
		im.denied.Add(1)
		if im.n.refusals.allow("denied-import:"+cfg.Name, "", time.Now()) {
			im.n.log.Warn("import connection denied by the exporter's allow list; closed", "import", cfg.Name, "err", err)
		}
		client.Close()
		im.active.Add(-1)
		finished()
		return
	}
	if err != nil {
		im.failed.Add(1)
		switch {
		case isClosedErr(err):
		case !im.n.exported(cfg.Name):
			if !im.noExporter.Swap(true) {
				im.n.log.Warn(fmt.Sprintf("no node exports %q: import connections are closed until one does", cfg.Name),
					"import", cfg.Name, "waited", cfg.ConnectTimeout)
			}
		default:
			// At most once a second: a flood of clients while every
			// endpoint fails must not flood the log.
			logLimited(im.n.log, im.gate.failLog, "import connection failed", "import", cfg.Name, "client", client.RemoteAddr().String(), "err", err)
		}
		client.Close()
		im.active.Add(-1)
		finished()
		return
	}
	im.last.Store(&ep.Node)
	if im.noExporter.Swap(false) {
		im.n.log.Info(fmt.Sprintf("%q is exported again", cfg.Name), "import", cfg.Name, "node", ep.Node)
	}
	cnt := im.nodeCounter(ep.Node)
	cnt.Add(1)
	tunnel.StartProxy(im.n.ctx, client, conn, func(out, in int64, err error) {
		im.n.broken.report("import", cfg.Name, ep.Node, out, in, err)
		cnt.Add(-1)
		im.active.Add(-1)
		finished()
	})
}

// connectRetryEvery is how often a connection waiting for an endpoint
// (connect_timeout) looks again.
const connectRetryEvery = 100 * time.Millisecond

// connectWaiting connects through the best endpoint (connect). While none
// can serve (no node exports the service yet, as right after start, or
// every endpoint is unhealthy or down) it looks again every
// connectRetryEvery, up to the import's connect_timeout, instead of
// failing the client at once. With a healthy endpoint known, a failed
// round fails the client as before.
func (im *importer) connectWaiting(ctx context.Context, cfg config.Import) (net.Conn, failover.Endpoint, error) {
	wait := cfg.ConnectTimeout
	if wait <= 0 {
		wait = config.DefaultConnectTimeout
	}
	deadline := time.Now().Add(wait)
	rr := im.rr.Add(1)
	if cfg.Balance == config.BalanceSourceHash {
		src, _ := clientFrom(ctx)
		rr = failover.SourceKey(src.Addr().Unmap().As16())
	}
	for {
		conn, ep, err := im.n.connect(ctx, cfg, 0, rr, im.activeTo)
		left := time.Until(deadline)
		if err == nil || isClosedErr(err) || im.n.hasUsableEndpoint(cfg.Name) || left <= 0 {
			return conn, ep, err
		}
		select {
		case <-im.n.ctx.Done():
			return nil, failover.Endpoint{}, im.n.ctx.Err()
		case <-time.After(min(connectRetryEvery, left)):
		}
		if im.closedNow() {
			return nil, failover.Endpoint{}, err
		}
	}
}

// closedNow reports whether the import was closed (removed by a reload,
// or the node is draining).
func (im *importer) closedNow() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.closed
}

// exported reports whether any node (this one included) exports service.
func (n *Node) exported(service string) bool {
	return len(n.catalog.Load().services[service]) > 0
}

// hasUsableEndpoint reports whether service has an endpoint that is
// healthy on a node that is alive and usable now: then a failed connect
// round is a real failure, not a wait for the catalog.
func (n *Node) hasUsableEndpoint(service string) bool {
	c := n.catalog.Load()
	now := time.Now()
	for _, e := range c.services[service] {
		if !e.healthy || !e.alive {
			continue
		}
		if e.local {
			return true
		}
		st, _ := n.tun.SessionStats(e.pub)
		if n.peerUsable(c.byName[e.node], st, now) {
			return true
		}
	}
	return false
}

// candidates orders the endpoints of imp's service for one connection:
// what the catalog, the tunnel, peer health and the breaker say of each,
// classified by failover.Classify (last resorts, the all-down fallback)
// and ranked by failover.Order.
func (n *Node) candidates(imp config.Import, rr uint64, active func(node string) int64) []failover.Endpoint {
	c := n.catalog.Load()
	eps := c.services[imp.Name]
	now := time.Now()
	cs := make([]failover.Candidate, 0, len(eps))
	for _, e := range eps {
		fc := failover.Candidate{
			Endpoint: failover.Endpoint{Node: e.node, Site: e.site, Local: e.local, Weight: e.weight, Active: int(active(e.node))},
			Healthy:  e.healthy, Alive: e.alive,
		}
		if !e.local {
			st, _ := n.tun.SessionStats(e.pub)
			m := c.byName[e.node]
			fc.RTT = st.SRTT
			fc.Usable = n.peerUsable(m, st, now)
			fc.Reachable = peerReachable(m, st, now)
			fc.BreakerOpen = n.breaker.Open(breakerKey(imp.Name, e.node), now)
		}
		cs = append(cs, fc)
	}
	return failover.Order(failover.Classify(cs), imp.Sites, failover.Balance(imp.Balance), rr)
}

func breakerKey(service, node string) string { return service + "/" + node }

// connect opens a connection to imp's service through the first candidate
// that answers, trying the next on failure. Each attempt has a deadline
// derived from the peer's RTT; an endpoint that fails is demoted by the
// circuit breaker. The returned conn has passed the open handshake (the
// exporter reached its backend).
func (n *Node) connect(ctx context.Context, imp config.Import, flags uint8, rr uint64, active func(string) int64) (net.Conn, failover.Endpoint, error) {
	cands := n.candidates(imp, rr, active)
	attempt := func(actx context.Context, ep failover.Endpoint) (net.Conn, error) {
		c, err := n.dialEndpoint(actx, imp.Name, ep, flags)
		if !ep.Local && ctx.Err() == nil && !failover.IsFinal(err) { // the caller giving up says nothing of the endpoint
			if err != nil {
				n.breaker.Failure(breakerKey(imp.Name, ep.Node), time.Now())
			} else {
				n.breaker.Success(breakerKey(imp.Name, ep.Node), time.Now())
			}
		}
		if err != nil && ctx.Err() == nil {
			n.log.Debug("import attempt failed; trying the next endpoint", "import", imp.Name, "node", ep.Node, "err", err)
		}
		return c, err
	}
	conn, ep, err := failover.Attempt(ctx, cands, failover.AttemptWindow, attempt)
	if err != nil && ctx.Err() == nil && failover.SecondRound(err) {
		// Every endpoint was slow and none refused: one more, longer round
		// before giving up on the client.
		n.log.Debug("import: every endpoint timed out; one longer round", "import", imp.Name)
		conn, ep, err = failover.Attempt(ctx, cands, failover.SecondRoundWindow, attempt)
	}
	if err == nil && len(cands) > 0 && cands[0].Node != ep.Node {
		n.metrics.Failover(imp.Name, cands[0].Node, ep.Node)
	}
	return conn, ep, err
}

// dialEndpoint opens one connection to service on ep: directly to the
// target for a local export, else a stream with the open handshake.
func (n *Node) dialEndpoint(ctx context.Context, service string, ep failover.Endpoint, flags uint8) (net.Conn, error) {
	src, dst := clientFrom(ctx)
	if ep.Local {
		e := n.exportMap()[service]
		if e == nil {
			return nil, fmt.Errorf("no local export %s", service)
		}
		c, err := e.dialTarget(ctx)
		if err == nil && flags&wire.FlagProbe == 0 {
			err = e.sendProxyHeader(c, src, dst)
		}
		return c, err
	}
	c := n.catalog.Load()
	m, ok := c.byName[ep.Node]
	if !ok {
		return nil, fmt.Errorf("node %s is not a member", ep.Node)
	}
	return n.tun.DialStream(ctx, m.Meta.PublicKey, func(s net.Conn) error {
		if err := wire.WriteRequest(s, wire.Request{Service: service, Flags: flags, Source: src, Dest: dst}); err != nil {
			return fmt.Errorf("send open request: %w", err)
		}
		resp, err := wire.ReadResponse(s)
		if err != nil {
			return fmt.Errorf("read open response: %w", err)
		}
		if resp.Status == wire.StatusNotAllowed {
			return failover.Final(fmt.Errorf("%w: %s", errDenied, resp.Message))
		}
		if resp.Status != wire.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, resp.Message)
		}
		return nil
	})
}

// clientKey carries a client connection's addresses through connect to
// dialEndpoint (the open request's options, the PROXY protocol header).
type clientKey struct{}

type clientAddrs struct{ src, dst netip.AddrPort }

// withClient returns ctx carrying c's remote (source) and local
// (destination) addresses.
func withClient(ctx context.Context, c net.Conn) context.Context {
	var a clientAddrs
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		a.src = ta.AddrPort()
	}
	if ta, ok := c.LocalAddr().(*net.TCPAddr); ok {
		a.dst = ta.AddrPort()
	}
	return context.WithValue(ctx, clientKey{}, a)
}

// clientFrom returns the client addresses withClient put in ctx (zero
// without a client, as for drill probes).
func clientFrom(ctx context.Context) (src, dst netip.AddrPort) {
	a, _ := ctx.Value(clientKey{}).(clientAddrs)
	return a.src, a.dst
}
