package e2e

// Helpers of the failover tests and benchmarks (failover_test.go,
// failover_bench_test.go): a small cluster builder that works with any
// testing.TB (benchmarks too) and writes the `failover:` section into the
// node configs, backends that say who they are, and a client that opens a
// new connection through an import every 50 ms and records what it saw.
//
// It reuses the harness's freePort, addr, runMeshd, tryStatus, waitFor,
// peer, service, tail and childEnv, and its meshNode type, so that
// tryStatus and the log helpers work on these nodes too.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/internal/tcpserver"
	"github.com/meshd/meshd/node"
)

// Failover settings of every node of these tests (README: `failover:`).
const (
	foSessionTimeout = 15 * time.Second
	foHoldDown       = 2 * time.Second
	foDrainGrace     = 5 * time.Second
)

// Client settings: a new connection every foEvery, each bounded by
// foConnTimeout. The bound is longer than any freeze or cut of these tests
// (and shorter than the session timeout): a connection that was in flight
// on a path that stalled is an established stream, which must ride the
// stall out (README), so it counts as failed only if it breaks, not because
// it was slow.
const (
	foEvery       = 50 * time.Millisecond
	foConnTimeout = 12 * time.Second
)

// ---------------------------------------------------------------- cluster

// foExport and foImport are lab's config entries (see exportSpec); a
// foImport's Listen is a free port.
type (
	foExport = lab.Export
	foImport = lab.Import
)

type foSpec struct {
	Name, Site string
	Exports    []foExport
	Imports    []foImport
}

// foMesh is the harness's cluster with the failover section above in
// every config (and log level debug with MESHD_E2E_DEBUG=1).
type foMesh struct{ *cluster }

func newFOMesh(tb testing.TB) *foMesh {
	tb.Helper()
	c := newClusterIn(tb, "mfo")
	c.failover = lab.Failover{SessionTimeout: foSessionTimeout, HoldDown: foHoldDown, DrainGrace: foDrainGrace}
	if os.Getenv("MESHD_E2E_DEBUG") != "" {
		c.logLevel = "debug"
	}
	return &foMesh{c}
}

// start starts a node; the first one is waited for until its control
// socket answers, so that the others' first join succeeds.
func (m *foMesh) start(s foSpec) *meshNode {
	m.t.Helper()
	return m.cluster.start(nodeSpec{Name: s.Name, Site: s.Site, Exports: s.Exports, Imports: s.Imports})
}

// foSeesUp reports whether obs sees every one of names alive, with a direct
// path, a measured RTT, usable for new connections ("up": after the
// hold-down), and exporting service as healthy.
func foSeesUp(tb testing.TB, obs *meshNode, svc string, names ...string) (bool, string) {
	st, err := tryStatus(tb, obs)
	if err != nil {
		return false, err.Error()
	}
	sv, _ := service(st, svc)
	for _, name := range names {
		p, ok := peer(st, name)
		if !ok {
			return false, fmt.Sprintf("%s does not list %s", obs.Name, name)
		}
		if p.State != "alive" || p.Path != node.PathDirect || !p.Up || p.RTT() <= 0 {
			return false, fmt.Sprintf("%s sees %s: state %s path %s up %v rtt %.2fms", obs.Name, name, p.State, p.Path, p.Up, p.RTT())
		}
		healthy := false
		for _, ep := range sv.Endpoints {
			if ep.Node == name && ep.Healthy {
				healthy = true
			}
		}
		if !healthy {
			return false, fmt.Sprintf("%s's catalog lacks a healthy %s on %s: %+v", obs.Name, svc, name, sv.Endpoints)
		}
	}
	return true, ""
}

// ---------------------------------------------------------------- backend

// foBackend is an echo server that first writes its name and a newline, so
// the client knows which exporter served it, then echoes every byte and
// honours half-close.
type foBackend struct {
	*tcpserver.Server
	name string
}

func startFOBackend(tb testing.TB, name string) *foBackend {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("backend %s: %v", name, err)
	}
	b := &foBackend{name: name}
	b.Server = tcpserver.Serve(ln, b.handle)
	tb.Cleanup(func() { b.Close() })
	return b
}

func (b *foBackend) handle(c net.Conn) {
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.WriteString(c, b.name+"\n"); err != nil {
		return
	}
	// Hide ReadFrom/WriteTo: a plain read-write loop.
	if _, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 32<<10)); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	// Wait for the peer's close, so the FIN is not raced by an RST.
	io.Copy(io.Discard, c)
}

// ---------------------------------------------------------------- client

// foDial connects through an import and reads the serving backend's name.
func foDial(address string, d time.Duration) (net.Conn, *bufio.Reader, string, error) {
	cn, err := net.DialTimeout("tcp", address, d)
	if err != nil {
		return nil, nil, "", fmt.Errorf("dial: %w", err)
	}
	cn.SetDeadline(time.Now().Add(d))
	br := bufio.NewReader(cn)
	line, err := br.ReadString('\n')
	if err != nil {
		cn.Close()
		return nil, nil, "", fmt.Errorf("read backend name: %w (got %q)", err, line)
	}
	return cn, br, strings.TrimSuffix(line, "\n"), nil
}

// foRoundTrip writes p and expects it back.
func foRoundTrip(cn net.Conn, br *bufio.Reader, p []byte) error {
	if _, err := cn.Write(p); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(p))
	if _, err := io.ReadFull(br, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, p) {
		return errors.New("echo differs from what was sent")
	}
	return nil
}

// foFinish half-closes and expects EOF.
func foFinish(cn net.Conn, br *bufio.Reader) error {
	if err := cn.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("CloseWrite: %w", err)
	}
	var one [1]byte
	if k, err := br.Read(one[:]); k != 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("after CloseWrite want EOF, got %d bytes, %v", k, err)
	}
	return nil
}

// foExchange is one client connection: connect, learn the backend, one
// echo round trip, half-close, EOF. connected is how long it took until the
// backend's name arrived: the connect delay the mesh added (0 if it never
// did).
func foExchange(address string, id int, d time.Duration) (name string, connected time.Duration, err error) {
	start := time.Now()
	cn, br, name, err := foDial(address, d)
	if err != nil {
		return "", 0, err
	}
	connected = time.Since(start)
	defer cn.Close()
	p := make([]byte, 64)
	for i := range p {
		p[i] = byte(id*31 + i)
	}
	if err := foRoundTrip(cn, br, p); err != nil {
		return name, connected, err
	}
	return name, connected, foFinish(cn, br)
}

// foRec is one client connection.
type foRec struct {
	ID         int
	Start, End time.Time
	Connect    time.Duration // until the backend's name arrived
	OK         bool
	Node       string // backend that served it ("" if unknown)
	Err        string
}

// foClient opens a new connection to an import every foEvery, each in its
// own goroutine so that a slow one does not delay the next.
type foClient struct {
	addr    string
	timeout time.Duration

	// Every connection holds gate for reading from before it starts until
	// it ends; quiesce takes it for writing to inject a fault between
	// connections.
	gate sync.RWMutex
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu   sync.Mutex
	recs []foRec // guarded by mu; in order of completion
	subs []func()
}

func startFOClient(tb testing.TB, address string) *foClient {
	c := &foClient{addr: address, timeout: foConnTimeout, stop: make(chan struct{})}
	c.wg.Add(1)
	go c.run()
	tb.Cleanup(c.Stop)
	return c
}

func (c *foClient) run() {
	defer c.wg.Done()
	tick := time.NewTicker(foEvery)
	defer tick.Stop()
	for id := 0; ; id++ {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.gate.RLock()
			defer c.gate.RUnlock()
			r := foRec{ID: id, Start: time.Now()}
			name, connect, err := foExchange(c.addr, id, c.timeout)
			r.End, r.Node, r.Connect, r.OK = time.Now(), name, connect, err == nil
			if err != nil {
				r.Err = err.Error()
			}
			c.mu.Lock()
			c.recs = append(c.recs, r)
			c.mu.Unlock()
		}()
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
	}
}

// Stop stops opening connections and waits for those in flight.
func (c *foClient) Stop() {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// quiesce runs f while no client connection is in flight and none starts:
// a fault injected by f hits the mesh between two client connections. The
// connections that would have started meanwhile start right after.
//
// This is for faults that kill or freeze an exporter: a connection whose
// stream is open on an exporter that dies cannot be saved by any proxy (a
// frozen one resumes, but only with it), while new connections must not
// fail. Those are what the tests count.
func (c *foClient) quiesce(f func()) {
	c.gate.Lock()
	defer c.gate.Unlock()
	f()
}

func (c *foClient) records() []foRec {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

// first returns the OK connection started at or after since, served by a
// node for which pred holds, that completed first.
func (c *foClient) first(since time.Time, pred func(node string) bool) (foRec, bool) {
	var best foRec
	found := false
	for _, r := range c.records() {
		if r.OK && !r.Start.Before(since) && pred(r.Node) && (!found || r.End.Before(best.End)) {
			best, found = r, true
		}
	}
	return best, found
}

// waitFirst polls until first finds a connection, up to d; it returns the
// time from since to that connection's completion.
func (c *foClient) waitFirst(tb testing.TB, since time.Time, pred func(string) bool, d time.Duration, what string) time.Duration {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		if r, ok := c.first(since, pred); ok {
			return r.End.Sub(since)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no client connection served by %s within %s; client: %s", what, d, c.summary(since, time.Time{}))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitOK polls until n connections started at or after since succeeded.
func (c *foClient) waitOK(tb testing.TB, since time.Time, n int, pred func(string) bool, d time.Duration, what string) {
	tb.Helper()
	waitFor(tb, d, what, func() (bool, string) {
		k := 0
		for _, r := range c.records() {
			if r.OK && !r.Start.Before(since) && pred(r.Node) {
				k++
			}
		}
		return k >= n, fmt.Sprintf("%d of %d; client: %s", k, n, c.summary(since, time.Time{}))
	})
}

// failures returns the failed connections.
func (c *foClient) failures() []foRec {
	var out []foRec
	for _, r := range c.records() {
		if !r.OK {
			out = append(out, r)
		}
	}
	return out
}

// summary describes the connections started in [from, to) (zero to: no
// end).
func (c *foClient) summary(from, to time.Time) string {
	byNode := map[string]int{}
	var lat, conn []time.Duration
	ok, failed := 0, 0
	for _, r := range c.records() {
		if r.Start.Before(from) || !to.IsZero() && !r.Start.Before(to) {
			continue
		}
		if r.OK {
			ok++
			byNode[r.Node]++
			lat = append(lat, r.End.Sub(r.Start))
			conn = append(conn, r.Connect)
		} else {
			failed++
		}
	}
	var nodes []string
	for n, k := range byNode {
		nodes = append(nodes, fmt.Sprintf("%s ×%d", n, k))
	}
	sort.Strings(nodes)
	s := fmt.Sprintf("%d ok, %d failed, served by [%s]", ok, failed, strings.Join(nodes, ", "))
	if len(lat) > 0 {
		slices.Sort(lat)
		slices.Sort(conn)
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		s += fmt.Sprintf("; connect p50 %s p99 %s max %s; whole exchange p50 %s p99 %s max %s",
			r(foPct(conn, 50)), r(foPct(conn, 99)), r(conn[len(conn)-1]),
			r(foPct(lat, 50)), r(foPct(lat, 99)), r(lat[len(lat)-1]))
	}
	return s
}

// checkConnectDelay fails tb for every successful connection whose connect
// took longer than max: while a healthy endpoint exists a client sees a
// bounded extra connect delay (README: per-attempt deadlines, floor 750 ms,
// then the next candidate). Use it only where no connection was in flight
// when the fault hit (see quiesce): such a connection stalls with its path.
func (c *foClient) checkConnectDelay(tb testing.TB, what string, t0 time.Time, max time.Duration) {
	tb.Helper()
	var slow []string
	for _, r := range c.records() {
		if r.OK && r.Connect > max {
			slow = append(slow, fmt.Sprintf("conn %d started %+.3fs: connect %s, served by %s",
				r.ID, r.Start.Sub(t0).Seconds(), r.Connect.Round(time.Millisecond), r.Node))
		}
	}
	if len(slow) > 0 {
		if len(slow) > 10 {
			slow = append(slow[:10], fmt.Sprintf("… and %d more", len(slow)-10))
		}
		tb.Errorf("%s: %d client connections took more than %s to connect although a healthy endpoint existed:\n  %s",
			what, len(slow), max, strings.Join(slow, "\n  "))
	}
}

// checkNoFailures fails tb for every failed client connection.
func (c *foClient) checkNoFailures(tb testing.TB, what string, t0 time.Time) {
	tb.Helper()
	fs := c.failures()
	if len(fs) == 0 {
		return
	}
	var b strings.Builder
	for i, r := range fs {
		if i == 10 {
			fmt.Fprintf(&b, "\n  … and %d more", len(fs)-i)
			break
		}
		fmt.Fprintf(&b, "\n  conn %d started %+.3fs, took %s: %s", r.ID, r.Start.Sub(t0).Seconds(), r.End.Sub(r.Start).Round(time.Millisecond), r.Err)
	}
	tb.Errorf("%s: %d client connections failed (want 0: a healthy endpoint existed all along):%s", what, len(fs), b.String())
}

// foPct is the p-th percentile (nearest rank) of sorted xs.
func foPct[T int64 | float64 | time.Duration](xs []T, p float64) T {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

func foIn(names ...string) func(string) bool {
	return func(n string) bool { return slices.Contains(names, n) }
}

func foSiteOnprem(n string) bool { return strings.HasPrefix(n, "onprem-") }

// ---------------------------------------------------------------- topology

// foTopo is the tests' mesh: edge-1 (site edge) imports echo with sites
// [onprem, cloud]; onprem-1, onprem-2 (site onprem) and cloud-1 (site
// cloud) export it, each to its own backend.
type foTopo struct {
	m        *foMesh
	edge     *meshNode
	onprem   []*meshNode
	cloud    *meshNode
	be       map[string]*foBackend
	imp      string // edge-1's echo import
	impCloud string // edge-1's echo-cloud import (sites [cloud, onprem]) if asked for
}

type foTopoOpts struct {
	onprem    int  // onprem exporters (default 2)
	cloudPref bool // also import echo as echo-cloud, preferring cloud
}

func newFOTopo(tb testing.TB, o foTopoOpts) *foTopo {
	tb.Helper()
	if o.onprem == 0 {
		o.onprem = 2
	}
	tp := &foTopo{m: newFOMesh(tb), be: map[string]*foBackend{}}
	imps := []foImport{{Name: "echo", Sites: []string{"onprem", "cloud"}}}
	if o.cloudPref {
		imps = append(imps, foImport{Name: "echo-cloud", Sites: []string{"cloud", "onprem"}})
	}
	// edge-1 first: it is everyone's join address and is never stopped.
	tp.edge = tp.m.start(foSpec{Name: "edge-1", Site: "edge", Imports: imps})
	export := func(name, site string) *meshNode {
		be := startFOBackend(tb, name)
		tp.be[name] = be
		exps := []foExport{{Name: "echo", Target: be.Addr()}}
		if o.cloudPref {
			exps = append(exps, foExport{Name: "echo-cloud", Target: be.Addr()})
		}
		return tp.m.start(foSpec{Name: name, Site: site, Exports: exps})
	}
	for i := 1; i <= o.onprem; i++ {
		tp.onprem = append(tp.onprem, export(fmt.Sprintf("onprem-%d", i), "onprem"))
	}
	tp.cloud = export("cloud-1", "cloud")
	tp.imp = tp.edge.Imports["echo"]
	tp.impCloud = tp.edge.Imports["echo-cloud"]
	tp.waitSteady(tb, 45*time.Second)
	return tp
}

func (tp *foTopo) exporters() []*meshNode {
	return append(slices.Clone(tp.onprem), tp.cloud)
}

func (tp *foTopo) onpremNames() []string {
	var ns []string
	for _, n := range tp.onprem {
		ns = append(ns, n.Name)
	}
	return ns
}

// waitSteady waits until edge-1 sees every exporter alive, direct, up and
// exporting echo, and echo works.
func (tp *foTopo) waitSteady(tb testing.TB, d time.Duration) {
	tb.Helper()
	var names []string
	for _, n := range tp.exporters() {
		names = append(names, n.Name)
	}
	waitFor(tb, d, "edge-1 to see every exporter up", func() (bool, string) {
		for _, n := range tp.m.all() {
			if !n.running() {
				tb.Fatalf("%s exited: %v\n%s", n.Name, n.exitErr(), tail(n.LogPath, 30))
			}
		}
		return foSeesUp(tb, tp.edge, "echo", names...)
	})
	waitFor(tb, 10*time.Second, "a connection through edge-1's echo import", func() (bool, string) {
		name, _, err := foExchange(tp.imp, 0, 5*time.Second)
		if err != nil {
			return false, err.Error()
		}
		return foSiteOnprem(name), "served by " + name
	})
}

// waitUp waits until edge-1 sees every exporter alive, direct and up.
func (tp *foTopo) waitUp(tb testing.TB, d time.Duration) {
	tb.Helper()
	var names []string
	for _, n := range tp.exporters() {
		names = append(names, n.Name)
	}
	waitFor(tb, d, "edge-1 to see every exporter up", func() (bool, string) {
		return foSeesUp(tb, tp.edge, "echo", names...)
	})
}

// waitDown waits up to d until edge-1 marks every one of nodes not up
// (what says why they are down: frozen, killed).
func (tp *foTopo) waitDown(tb testing.TB, d time.Duration, what string, nodes ...*meshNode) {
	tb.Helper()
	waitFor(tb, d, "edge-1 to mark the "+what+" down", func() (bool, string) {
		st, err := tryStatus(tb, tp.edge)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			if p, _ := peer(st, n.Name); p.Up {
				return false, fmt.Sprintf("%s still up: %+v", n.Name, p)
			}
		}
		return true, ""
	})
}

// checkOutage fails tb unless an outage of every onprem exporter (what)
// went as the issue demands: no client connection failed, none waited
// longer than foMaxConnect to connect, recovery to cloud-1 took less than
// foMaxRecovery, failback less than foMaxFailback, and edge-1 counts no
// failed connection.
func (tp *foTopo) checkOutage(tb testing.TB, cl *foClient, what, failbackWhat string, t0 time.Time, rto, failback time.Duration) {
	tb.Helper()
	cl.checkNoFailures(tb, what, t0)
	cl.checkConnectDelay(tb, what, t0, foMaxConnect)
	if rto >= foMaxRecovery {
		tb.Errorf("recovery took %s, want < %s", rto.Round(time.Millisecond), foMaxRecovery)
	}
	if failback >= foMaxFailback {
		tb.Errorf("%s took %s, want < %s", failbackWhat, failback.Round(time.Millisecond), foMaxFailback)
	}
	if f := tp.importFailed(tb, "echo"); f != 0 {
		tb.Errorf("edge-1's echo import counts %d failed connections, want 0", f)
	}
}

// importFailed returns edge-1's failed counter of import name.
func (tp *foTopo) importFailed(tb testing.TB, name string) uint64 {
	tb.Helper()
	st, err := tryStatus(tb, tp.edge)
	if err != nil {
		tb.Errorf("status of edge-1: %v", err)
		return 0
	}
	for _, im := range st.Imports {
		if im.Name == name {
			return im.Failed
		}
	}
	tb.Errorf("edge-1's status lists no import %s: %+v", name, st.Imports)
	return 0
}
