//go:build linux

package e2e

// Helpers of the TestRelayNetns* tests: a star of network namespaces (one
// per meshd node) around a router namespace, UDP cuts and lossy links in
// the router, and long-lived checksummed echo streams dialled from inside
// a namespace. Only addresses of 10.98.0.0/16 inside namespaces these
// tests create (and remove) are used. The generic namespace helpers
// (newNetnsTopo, startInNetns, startNetnsEcho, dialInNetns) are TestNetns's.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/node"
)

// rnPrefix starts the names of the namespaces of these tests:
// me2r-<pid>-<seq>-<role>, seq counting topologies in this process.
const rnPrefix = "me2r-"

var (
	rnSeq   atomic.Int64
	rnStale = regexp.MustCompile(`^me2r-([0-9]+)-[0-9]+-[a-z0-9]+$`)
)

const (
	rnEchoAddr   = "127.0.0.1:7000" // the exporter's backend, on its own loopback
	rnImportPort = 15000
	rnUDPTable   = "me2r_udp" // nftables table of the UDP cut, in the router
)

// rnHostSpec describes one node of the topology.
type rnHostSpec struct {
	Role  string // namespace suffix and router interface suffix: [a-z0-9]+
	Node  string // meshd node name
	Site  string
	Relay bool // relay.enabled on this node
}

// rnHost is a node's namespace: eth0 10.98.<octet>.2/24, router .1.
type rnHost struct {
	rnHostSpec
	octet int
	ns    string
	n     *meshNode // once started
}

func (h *rnHost) ip() string       { return fmt.Sprintf("10.98.%d.2", h.octet) }
func (h *rnHost) gossip() string   { return h.ip() + ":7946" }
func (h *rnHost) nsPath() string   { return netnsPath(h.ns) }
func (h *rnHost) importAt() string { return net.JoinHostPort(h.ip(), strconv.Itoa(rnImportPort)) }

// rnTopo is the star: every host's namespace is joined to the router's by
// a veth pair; the router forwards between them and is where links are cut.
type rnTopo struct {
	t      *testing.T
	router string
	hosts  map[string]*rnHost // by role
	c      *cluster
	topo   *netnsTopo
}

// rnSkipUnlessPossible skips unless we are root with ip, nft and iptables.
func rnSkipUnlessPossible(t *testing.T) {
	t.Helper()
	netnsSkipUnlessPossible(t) // Linux, root, ip, nft
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skipf("relay network-namespace test: iptables not installed (apt-get install iptables): %v", err)
	}
}

// newRNTopo creates the router and one namespace per host (a lab.Topo
// star: the i-th host at octet i), and the cluster (key, temp dir) the
// nodes will share. Everything is removed in t.Cleanup, even on failure;
// then no namespace of ours may be left (newNetnsTopo).
func newRNTopo(t *testing.T, specs ...rnHostSpec) *rnTopo {
	t.Helper()
	rnSkipUnlessPossible(t)
	removeStale(t, rnStale)
	prefix := fmt.Sprintf("%s%d-%d-", rnPrefix, os.Getpid(), rnSeq.Add(1))
	tp := &rnTopo{t: t, router: prefix + "rt", hosts: map[string]*rnHost{}, topo: newNetnsTopo(t)}
	var names []string
	for i, s := range specs {
		h := &rnHost{rnHostSpec: s, octet: i + 1, ns: prefix + s.Role}
		tp.hosts[s.Role] = h
		names = append(names, h.ns)
	}
	ctx := context.Background()
	hosts, err := tp.topo.Star(ctx, tp.router, "10.98", names...)
	tp.topo.must(err)
	for i, h := range hosts {
		if want := tp.hosts[specs[i].Role].ip(); h.IP != want {
			t.Fatalf("host %s at %s, want %s", specs[i].Role, h.IP, want)
		}
	}
	if err := tp.topo.CheckNft(ctx, tp.router, rnUDPCutRules("10.98.1.2", "10.98.2.2")); err != nil {
		t.Skipf("relay network-namespace test: nftables not usable here (kernel without nf_tables?): %v", err)
	}
	tp.c = newCluster(t)
	return tp
}

func (tp *rnTopo) host(role string) *rnHost {
	h := tp.hosts[role]
	if h == nil {
		tp.t.Fatalf("no host %q in the topology", role)
	}
	return h
}

// start writes role's config and starts its meshd inside its namespace.
// It joins the gossip of the join roles; edit (if not nil) adds to the
// config (exports, imports). A relay host gets relay.enabled on <ip>:7947.
func (tp *rnTopo) start(role string, join []string, edit func(*lab.Node)) *meshNode {
	t := tp.t
	t.Helper()
	h := tp.host(role)
	var js []string
	for _, j := range join {
		js = append(js, tp.host(j).gossip())
	}
	n, cfg := tp.c.netnsNode(h.Node, h.Site, h.ip(), js)
	if h.Relay {
		cfg.RelayEnabled, cfg.RelayListen = true, h.ip()+":7947"
	}
	if edit != nil {
		edit(&cfg)
	}
	startInNetns(t, tp.c, h.ns, n, cfg)
	h.n = n
	return n
}

// rnExportEcho / importEcho are config edits: export the echo backend;
// import it on the host's address.
func rnExportEcho(cfg *lab.Node) {
	cfg.Exports = append(cfg.Exports, lab.Export{Name: "echo", Target: rnEchoAddr, CheckInterval: time.Second, CheckTimeout: time.Second})
}

func (tp *rnTopo) importEcho(role string) func(*lab.Node) {
	at := tp.host(role).importAt()
	return func(cfg *lab.Node) { cfg.Imports = append(cfg.Imports, lab.Import{Name: "echo", Listen: at}) }
}

// rnUDPCutRules drops every UDP packet between a and b in the router.
func rnUDPCutRules(a, b string) string {
	return fmt.Sprintf(`table inet %s {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ip saddr %[2]s ip daddr %[3]s meta l4proto udp drop
		ip saddr %[3]s ip daddr %[2]s meta l4proto udp drop
	}
}
`, rnUDPTable, a, b)
}

// blockUDP drops all UDP between the two roles' addresses in the router
// (TCP between them, and everything else, still flows).
func (tp *rnTopo) blockUDP(a, b string) {
	tp.t.Helper()
	if err := tp.topo.Nft(context.Background(), tp.router, rnUDPCutRules(tp.host(a).ip(), tp.host(b).ip())); err != nil {
		tp.t.Fatal(err)
	}
}

// unblockUDP removes blockUDP's table.
func (tp *rnTopo) unblockUDP() {
	tp.t.Helper()
	inNetns(tp.t, tp.router, "nft", "delete", "table", "inet", rnUDPTable)
}

// lossyUDP makes the router drop UDP between the two roles with the given
// probability, each way, with iptables' statistic match in FORWARD.
func (tp *rnTopo) lossyUDP(a, b string, p float64) {
	tp.t.Helper()
	ia, ib := tp.host(a).ip(), tp.host(b).ip()
	for _, d := range [][2]string{{ia, ib}, {ib, ia}} {
		inNetns(tp.t, tp.router, "iptables", "-A", "FORWARD", "-p", "udp", "-s", d[0], "-d", d[1],
			"-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(p, 'f', 2, 64), "-j", "DROP")
	}
}

// ---------------------------------------------------------------- status

// rnPoll polls cond every `every` until it holds or d passes; it returns
// when cond first held (zero if never) and its last explanation.
func rnPoll(d, every time.Duration, cond func() (bool, string)) (time.Time, string) {
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return time.Now(), why
		}
		if time.Now().After(deadline) {
			return time.Time{}, why
		}
		time.Sleep(every)
	}
}

// rnWaitSteadyOr is rnWaitSteady, with dump's text in the failure.
func rnWaitSteadyOr(t *testing.T, d, hold time.Duration, what string, cond func() (bool, string), dump func() string) {
	t.Helper()
	var since time.Time
	at, why := rnPoll(d, 100*time.Millisecond, func() (bool, string) {
		ok, why := cond()
		switch {
		case !ok:
			since = time.Time{}
			return false, why
		case since.IsZero():
			since = time.Now()
		}
		return time.Since(since) >= hold, why
	})
	if at.IsZero() {
		t.Fatalf("timed out after %s waiting for %s steadily for %s: %s\n%s", d, what, hold, why, dump())
	}
}

// rnPathDump returns what a failed wait for a path needs: both sides'
// status of each other, their path layer's log lines (moves; at debug
// level each change of a peer's probe interval, with answered and sent
// probes), the relay's, and the router's UDP cut, if any.
func rnPathDump(t *testing.T, tp *rnTopo, an, bn *meshNode) func() string {
	return func() string {
		var sb strings.Builder
		for _, v := range [][2]*meshNode{{an, bn}, {bn, an}} {
			_, why := rnPeerCond(t, v[0], v[1].Name, func(node.PeerStatus) bool { return true })()
			fmt.Fprintf(&sb, "%s\n", why)
		}
		for _, n := range []*meshNode{an, bn, tp.host("r").n} {
			if n == nil {
				continue
			}
			var lines []string
			for _, l := range strings.Split(n.logText(), "\n") {
				if strings.Contains(l, "msg=\"path:") || strings.Contains(l, "msg=\"relay") || strings.Contains(l, "session up") ||
					strings.Contains(l, "session down") || strings.Contains(l, "peer makes contact") {
					lines = append(lines, l)
				}
			}
			if len(lines) > 40 {
				lines = append([]string{fmt.Sprintf("(%d earlier lines left out)", len(lines)-40)}, lines[len(lines)-40:]...)
			}
			fmt.Fprintf(&sb, "---- %s's path, relay and session lines ----\n%s\n", n.Name, strings.Join(lines, "\n"))
		}
		if out, err := netnsCmd("ip", "netns", "exec", tp.router, "nft", "list", "ruleset"); err == nil {
			fmt.Fprintf(&sb, "---- router's nft ruleset ----\n%s\n", strings.TrimSpace(out))
		}
		return sb.String()
	}
}

// rnPeerCond is a condition on obs's view of the peer named name.
func rnPeerCond(t *testing.T, obs *meshNode, name string, ok func(p node.PeerStatus) bool) func() (bool, string) {
	return func() (bool, string) {
		st, err := tryStatus(t, obs)
		if err != nil {
			return false, err.Error()
		}
		p, found := peer(st, name)
		if !found {
			return false, fmt.Sprintf("%s does not list %s", obs.Name, name)
		}
		return ok(p), fmt.Sprintf("%s sees %s: %s", obs.Name, name, rnPeerString(p))
	}
}

func rnPeerString(p node.PeerStatus) string {
	return fmt.Sprintf("state %s path %s relay_via %q up %v rtt %.2fms streams %d endpoint %s",
		p.State, p.Path, p.RelayVia, p.Up, p.RTT(), p.Streams, p.Endpoint)
}

// rnServiceReady: obs lists echo with exporter healthy.
func rnServiceReady(t *testing.T, obs *meshNode, exporter string) func() (bool, string) {
	return func() (bool, string) {
		st, err := tryStatus(t, obs)
		if err != nil {
			return false, err.Error()
		}
		svc, _ := service(st, "echo")
		for _, ep := range svc.Endpoints {
			if ep.Node == exporter && ep.Healthy {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%s's catalog: echo %+v", obs.Name, svc)
	}
}

// waitCatalog waits up to d for obs to list echo on exporter, healthy.
// On failure it shows every node's view of echo and of the exporter, then
// fails the test.
func (tp *rnTopo) waitCatalog(obs *meshNode, exporter string, d time.Duration) time.Duration {
	t := tp.t
	t.Helper()
	t0 := time.Now()
	at, why := rnPoll(d, 100*time.Millisecond, rnServiceReady(t, obs, exporter))
	if !at.IsZero() {
		if took := at.Sub(t0); took > 2*time.Second {
			// Seen with UDP blocked between the exporter and obs: the
			// record came by a periodic push/pull (every 10 s, the first
			// one 10-20 s after start), not by gossip.
			t.Logf("note: %s's catalog listed echo on %s only after %s", obs.Name, exporter, took.Round(time.Millisecond))
		}
		return at.Sub(t0)
	}
	for _, h := range tp.hosts {
		if h.n == nil || !h.n.running() {
			continue
		}
		st, err := tryStatus(t, h.n)
		if err != nil {
			t.Logf("%s: %v", h.Node, err)
			continue
		}
		svc, _ := service(st, "echo")
		p, _ := peer(st, exporter)
		t.Logf("%s's view: echo %+v; %s: %s", h.Node, svc.Endpoints, exporter, rnPeerString(p))
	}
	t.Fatalf("timed out after %s waiting for echo on %s healthy in %s's catalog: %s", d, exporter, obs.Name, why)
	return 0
}

// rnImportFailed is obs's failed count of its echo import.
func rnImportFailed(t *testing.T, obs *meshNode) (total, failed uint64, err error) {
	st, err := tryStatus(t, obs)
	if err != nil {
		return 0, 0, err
	}
	for _, im := range st.Imports {
		if im.Name == "echo" {
			return uint64(im.Total), uint64(im.Failed), nil
		}
	}
	return 0, 0, fmt.Errorf("%s has no import echo", obs.Name)
}

// ---------------------------------------------------------------- streams

// rnStreamOpts drives one echo stream.
type rnStreamOpts struct {
	Total    int64         // bytes to send; 0: until Stop closes
	Chunk    int           // write size
	Every    time.Duration // one chunk per tick; 0: as fast as possible
	Stop     <-chan struct{}
	Deadline time.Time // absolute deadline of the connection
}

// rnStream is one connection through an import to the echo backend: a
// pseudo-random byte stream (ChaCha8, seeded by the stream's id) is sent
// and what comes back is compared byte by byte with it, and hashed.
type rnStream struct {
	ID       int
	Served   string // the echo's banner: its node
	Sent     int64
	Recv     int64
	SentSum  []byte // SHA-256 of what was sent
	RecvSum  []byte // SHA-256 of what came back
	Err      error
	Start    time.Time
	End      time.Time
	Arrivals []time.Time // when each read of payload returned data
}

func rnSeed(id int) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], uint64(id)+0x6d657368)
	copy(s[8:], "relay-netns-stream")
	return s
}

// rnRunStream runs one stream to completion (or failure) and returns it.
// It never calls t: it may run on any goroutine.
func rnRunStream(nsPath, addr string, id int, o rnStreamOpts) *rnStream {
	r := &rnStream{ID: id, Start: time.Now()}
	defer func() { r.End = time.Now() }()
	cn, err := dialInNetns(nsPath, addr, 5*time.Second)
	if err != nil {
		r.Err = fmt.Errorf("dial: %w", err)
		return r
	}
	defer cn.Close()
	cn.SetDeadline(o.Deadline)
	br := bufio.NewReaderSize(cn, 64<<10)
	banner, err := br.ReadString('\n')
	if err != nil {
		r.Err = fmt.Errorf("read banner: %w", err)
		return r
	}
	r.Served = strings.TrimSpace(banner)

	var (
		werr  error
		wdone = make(chan struct{})
	)
	go func() {
		defer close(wdone)
		gen := rand.NewChaCha8(rnSeed(id))
		h := sha256.New()
		buf := make([]byte, o.Chunk)
		var tick <-chan time.Time
		if o.Every > 0 {
			tk := time.NewTicker(o.Every)
			defer tk.Stop()
			tick = tk.C
		}
	send:
		for o.Total == 0 || r.Sent < o.Total {
			if tick != nil {
				select {
				case <-o.Stop:
					break send
				case <-tick:
				}
			} else if o.Stop != nil {
				select {
				case <-o.Stop:
					break send
				default:
				}
			}
			p := buf
			if o.Total > 0 && o.Total-r.Sent < int64(len(p)) {
				p = p[:o.Total-r.Sent]
			}
			gen.Read(p)
			h.Write(p)
			n, err := cn.Write(p)
			r.Sent += int64(n)
			if err != nil {
				werr = fmt.Errorf("write after %d bytes: %w", r.Sent, err)
				cn.Close() // unblock the reader
				return
			}
		}
		r.SentSum = h.Sum(nil)
		if err := cn.(*net.TCPConn).CloseWrite(); err != nil {
			werr = fmt.Errorf("CloseWrite: %w", err)
		}
	}()

	gen := rand.NewChaCha8(rnSeed(id))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	want := make([]byte, 64<<10)
	var rerr error
	for {
		n, err := br.Read(buf)
		if n > 0 {
			r.Arrivals = append(r.Arrivals, time.Now())
			gen.Read(want[:n])
			if !bytes.Equal(buf[:n], want[:n]) {
				i := 0
				for i < n && buf[i] == want[i] {
					i++
				}
				rerr = fmt.Errorf("echoed byte %d differs from what was sent", r.Recv+int64(i))
				break
			}
			h.Write(buf[:n])
			r.Recv += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rerr = fmt.Errorf("read after %d bytes: %w", r.Recv, err)
			break
		}
	}
	if rerr != nil {
		cn.Close() // unblock the writer
	}
	<-wdone
	r.RecvSum = h.Sum(nil)
	switch {
	case werr != nil:
		r.Err = werr
	case rerr != nil:
		r.Err = rerr
	case r.Recv != r.Sent:
		r.Err = fmt.Errorf("EOF after %d of %d bytes", r.Recv, r.Sent)
	case !bytes.Equal(r.SentSum, r.RecvSum):
		r.Err = fmt.Errorf("checksum %x of what came back, %x sent", r.RecvSum[:8], r.SentSum[:8])
	}
	return r
}

// rnStreams runs n paced streams concurrently until Stop.
type rnStreams struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []*rnStream
}

func startRNStreams(t *testing.T, nsPath, addr string, n int, o rnStreamOpts) *rnStreams {
	s := &rnStreams{stop: make(chan struct{})}
	o.Stop = s.stop
	for i := range n {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			r := rnRunStream(nsPath, addr, i, o)
			s.mu.Lock()
			s.results = append(s.results, r)
			s.mu.Unlock()
		}()
	}
	t.Cleanup(func() { s.finish() })
	return s
}

// finish tells every stream to stop sending and waits for them to end
// (bounded by their deadline).
func (s *rnStreams) finish() []*rnStream {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	slices.SortFunc(s.results, func(a, b *rnStream) int { return a.ID - b.ID })
	return slices.Clone(s.results)
}

// check fails the test for every stream that failed or was not served by
// want, and returns the bytes echoed in total.
func rnCheckStreams(t *testing.T, what string, rs []*rnStream, want string) int64 {
	t.Helper()
	var total int64
	bad := 0
	for _, r := range rs {
		total += r.Recv
		if r.Err != nil {
			bad++
			t.Errorf("%s: stream %d failed after %s (served by %q, %d bytes sent, %d echoed): %v",
				what, r.ID, r.End.Sub(r.Start).Round(time.Millisecond), r.Served, r.Sent, r.Recv, r.Err)
			continue
		}
		if r.Served != want {
			t.Errorf("%s: stream %d served by %q, want %q", what, r.ID, r.Served, want)
		}
	}
	t.Logf("%s: %d streams, %d failed, %.1f MiB echoed intact in total", what, len(rs), bad, float64(total)/(1<<20))
	return total
}

// rnMaxGap returns the longest time without data on r in [from, to): the
// longest interval between consecutive arrivals that overlaps it, and
// when that interval started.
func rnMaxGap(r *rnStream, from, to time.Time) (gap time.Duration, at time.Time) {
	arr := r.Arrivals
	for i := 1; i < len(arr); i++ {
		a, b := arr[i-1], arr[i]
		if b.After(from) && a.Before(to) && b.Sub(a) > gap {
			gap, at = b.Sub(a), a
		}
	}
	return gap, at
}

// rnStallReport is the longest gap of any stream in [from, to), the
// median of the streams' longest gaps, and which stream had the longest.
func rnStallReport(rs []*rnStream, from, to time.Time) (worst, median time.Duration, worstAt time.Time, id int) {
	var gaps []time.Duration
	for _, r := range rs {
		g, at := rnMaxGap(r, from, to)
		gaps = append(gaps, g)
		if g > worst {
			worst, worstAt, id = g, at, r.ID
		}
	}
	if len(gaps) > 0 {
		slices.Sort(gaps)
		median = gaps[len(gaps)/2]
	}
	return worst, median, worstAt, id
}

// rnArrivedAfter counts the streams with data after since.
func rnArrivedAfter(rs []*rnStream, since time.Time) int {
	k := 0
	for _, r := range rs {
		if len(r.Arrivals) > 0 && r.Arrivals[len(r.Arrivals)-1].After(since) {
			k++
		}
	}
	return k
}
