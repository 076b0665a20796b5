//go:build linux

package e2e

// Helpers of the network-namespace tests (TestNetns, TestKernelNetns,
// TestRelayNetns*): a per-test lab.Topo (namespaces, veth pairs, routes,
// nftables; internal/lab) removed even on failure, meshd processes and
// echo servers inside the namespaces, a client that dials from inside a
// namespace. Only private addresses inside the namespaces that the tests
// create (and remove) are ever used.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/internal/netns"

	"golang.org/x/sys/unix"
)

// Environment of the echo helper process: the test binary re-executed
// inside a namespace with these set serves a named echo instead of
// running tests (see init below).
const (
	envNetnsEchoAddr = "MESHD_E2E_NETNS_ECHO_ADDR"
	envNetnsEchoName = "MESHD_E2E_NETNS_ECHO_NAME"
)

// netnsEchoLifetime bounds the echo helper's life even if nobody kills it.
const netnsEchoLifetime = 5 * time.Minute

func init() {
	if a := os.Getenv(envNetnsEchoAddr); a != "" {
		os.Exit(serveNamedEcho(a, os.Getenv(envNetnsEchoName)))
	}
}

// serveNamedEcho is the echo helper process: on addr, every connection
// first gets "<name>\n", then everything it sends is echoed back until
// its half-close, which is answered with ours. It prints "ready" once it
// listens and exits when its stdin closes (the test died or killed it),
// or after netnsEchoLifetime.
func serveNamedEcho(addr, name string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo helper:", err)
		return 1
	}
	fmt.Println("ready")
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	time.AfterFunc(netnsEchoLifetime, func() { os.Exit(0) })
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "echo helper: accept:", err)
			return 1
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			if _, err := io.WriteString(c, name+"\n"); err != nil {
				return
			}
			if _, err := io.Copy(c, c); err != nil {
				return
			}
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}()
	}
}

// ---------------------------------------------------------------- namespaces

// netnsPrefix starts the names of every namespace this test creates:
// me2e-<pid>-<role>.
const netnsPrefix = "me2e-"

var staleNetns = regexp.MustCompile(`^me2e-([0-9]+)-(onprem|cloud|edge|core)$`)

// netnsSkipUnlessPossible skips the test unless we are root with ip and
// nft installed.
func netnsSkipUnlessPossible(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("network-namespace test: Linux only")
	}
	if os.Geteuid() != 0 {
		t.Skip("network-namespace test: needs root (ip netns, veth, nftables); run as root to include it")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("network-namespace test: %q not installed (apt-get install iproute2 nftables): %v", tool, err)
		}
	}
}

// netnsCmd runs ip (or another tool) with args, bounded by 15 s, and returns
// its combined output.
func netnsCmd(name string, args ...string) (string, error) {
	return netns.Run(context.Background(), name, args...)
}

// removeStale deletes namespaces matching owned (first submatch: the pid
// of the run that made them) left by an earlier run of these tests that
// was killed before its cleanup (e.g. by go test's -timeout).
func removeStale(t *testing.T, owned *regexp.Regexp) {
	for _, name := range netns.RemoveStale(context.Background(), owned) {
		t.Logf("removed stale namespace %s of a dead earlier run", name)
	}
}

// netnsPath is the file of a named namespace, for netnsSetns(2).
func netnsPath(name string) string { return netns.Path(name) }

// netnsTopo is the lab.Topo of one test (namespaces, veth pairs, routes,
// nftables rules; internal/lab). Its namespaces are removed in t.Cleanup,
// even on failure, after every process of the test was killed (those
// register their cleanups later), and then none of them may be left.
type netnsTopo struct {
	*lab.Topo
	t *testing.T
}

func newNetnsTopo(t *testing.T) *netnsTopo {
	t.Helper()
	tp := &netnsTopo{Topo: &lab.Topo{Progress: t.Logf}, t: t}
	t.Cleanup(func() {
		made := tp.Namespaces()
		if err := tp.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		names, err := netns.List(context.Background())
		if err != nil {
			t.Errorf("cleanup check: %v", err)
			return
		}
		for _, ns := range made {
			if slices.Contains(names, ns) {
				t.Errorf("cleanup check: namespace %s still exists", ns)
			}
		}
	})
	return tp
}

// must fails the test on err from building the topology, or skips it if
// this machine cannot make a namespace at all.
func (tp *netnsTopo) must(err error) {
	tp.t.Helper()
	if errors.Is(err, lab.ErrNoNamespace) {
		tp.t.Skipf("network-namespace test: %v; needs CAP_SYS_ADMIN and a kernel with netns", err)
	}
	if err != nil {
		tp.t.Fatal(err)
	}
}

// inNetns runs name args inside namespace ns and fails the test on error.
func inNetns(t *testing.T, ns string, name string, args ...string) string {
	t.Helper()
	out, err := netnsCmd("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// netnsSetns moves the calling OS thread into the network namespace of fd.
func netnsSetns(fd uintptr) error {
	return unix.Setns(int(fd), unix.CLONE_NEWNET)
}

// dialInNetns dials addr over TCP from inside the namespace at nsPath: a
// locked OS thread enters the namespace, creates and connects the socket
// (which stays in that namespace), and goes back. If it cannot go back it
// stays locked, so that the runtime discards it when the goroutine ends.
func dialInNetns(nsPath, addr string, timeout time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := netnsSetns(target.Fd()); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, timeout)
		if rerr := netnsSetns(orig.Fd()); rerr == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// ---------------------------------------------------------------- processes

// netnsNode is a node to run inside a namespace at ip: its meshNode
// (files in the cluster's dir, gossip on ip:7946, tunnel on ip:51820) and
// its base config (the cluster's key, the join seeds, userspace mode, log
// at info). Add exports and imports to the config, then startInNetns.
func (c *cluster) netnsNode(name, site, ip string, join []string) (*meshNode, lab.Node) {
	n := &meshNode{
		Name: name, Site: site,
		Dir:        filepath.Join(c.dir, name),
		Config:     filepath.Join(c.dir, name+".yaml"),
		LogPath:    filepath.Join(c.dir, name+".log"),
		GossipPort: 7946,
		TunnelPort: 51820,
		Imports:    map[string]string{},
	}
	cfg := lab.Node{Name: name, Site: site, DataDir: n.Dir, KeyFile: c.keyFile, Join: join,
		GossipBind: ip + ":7946", TunnelListen: ip + ":51820", TunnelMode: "userspace",
		LogLevel: c.logLevel, LogFormat: "text"}
	if l := os.Getenv("MESHD_E2E_NETNS_LOG_LEVEL"); l != "" { // debug to diagnose
		cfg.LogLevel = l
	}
	return n, cfg
}

// startInNetns writes cfg to n.Config, starts `meshd join --config
// n.Config` inside namespace ns and manages it like cluster.start does
// (kill in cleanup, log checks). n.Imports gets cfg's imports.
func startInNetns(t *testing.T, c *cluster, ns string, n *meshNode, cfg lab.Node) {
	t.Helper()
	for _, im := range cfg.Imports {
		n.Imports[im.Name] = im.Listen
	}
	c.add(n)
	// ip execs meshd in place: the pid is meshd's, and it dies with this
	// test process (lab.Proc's Pdeathsig).
	launch(t, n, cfg, "ip", "netns", "exec", ns)
}

// startNetnsEcho starts the echo helper (this test binary) inside
// namespace ns on addr, answering with name, and waits until it listens.
func startNetnsEcho(t *testing.T, ns, addr, name string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envNetnsEchoAddr+"="+addr, envNetnsEchoName+"="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe() // closed by our death: the helper exits
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start echo helper in %s: %v", ns, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("echo helper %d in %s did not exit after SIGKILL", cmd.Process.Pid, ns)
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			<-done
			t.Fatalf("echo helper in %s: %q, stderr: %s", ns, line, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("echo helper in %s not ready within 20 s", ns)
	}
}

// ---------------------------------------------------------------- client

// nsAttempt is one client connection: who served it, or why it failed.
type nsAttempt struct {
	start, end time.Time
	node       string // the echo's name; "" if failed
	err        error
}

// nsClient starts a connection to an address from inside a namespace
// every interval, without waiting for the previous ones (a connection
// stalled by the cut does not hold up the next), and records each.
type nsClient struct {
	nsPath, addr string
	interval     time.Duration

	mu       sync.Mutex
	attempts []nsAttempt // guarded by mu; in order of completion

	stop chan struct{}
	done chan struct{}
}

const (
	// nsClientMaxAttempts bounds a client's life (at 50 ms: 3+ minutes).
	nsClientMaxAttempts = 4000
	// nsConnDeadline bounds one connection. It is longer than the cut so
	// that a connection established just before it can ride it out.
	nsConnDeadline = 20 * time.Second
)

func startNsClient(t *testing.T, nsPath, addr string, interval time.Duration) *nsClient {
	c := &nsClient{nsPath: nsPath, addr: addr, interval: interval,
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	t.Cleanup(c.Stop)
	return c
}

func (c *nsClient) run() {
	defer close(c.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for i := 0; i < nsClientMaxAttempts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := nsAttempt{start: time.Now()}
			a.node, a.err = c.once(i)
			a.end = time.Now()
			c.mu.Lock()
			c.attempts = append(c.attempts, a)
			c.mu.Unlock()
		}()
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
	}
}

// once makes one connection: sends a line, expects "<node>\n" and the
// line back, half-closes, expects EOF.
func (c *nsClient) once(i int) (string, error) {
	cn, err := dialInNetns(c.nsPath, c.addr, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("dial: %w", err)
	}
	defer cn.Close()
	cn.SetDeadline(time.Now().Add(nsConnDeadline))
	msg := fmt.Sprintf("ping-%d\n", i)
	if _, err := io.WriteString(cn, msg); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	br := bufio.NewReader(cn)
	name, err := br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read banner: %w", err)
	}
	echo, err := br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read echo: %w", err)
	}
	if echo != msg {
		return "", fmt.Errorf("echo %q, want %q", echo, msg)
	}
	if err := cn.(*net.TCPConn).CloseWrite(); err != nil {
		return "", fmt.Errorf("CloseWrite: %w", err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		return "", fmt.Errorf("after CloseWrite want EOF, got %q, %v", rest, err)
	}
	return strings.TrimSpace(name), nil
}

// holdConn opens a connection from inside the namespace at nsPath to addr
// and makes one round trip ("held-1"), expecting onprem-1 to serve it; the
// connection is left open for holdRoundTrip.
func holdConn(nsPath, addr string) (net.Conn, *bufio.Reader, error) {
	cn, err := dialInNetns(nsPath, addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	cn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(cn)
	if _, err := io.WriteString(cn, "held-1\n"); err != nil {
		cn.Close()
		return nil, nil, err
	}
	name, err := br.ReadString('\n')
	if err == nil && name != "onprem-1\n" {
		err = fmt.Errorf("served by %q, want onprem-1", strings.TrimSpace(name))
	}
	if err == nil {
		var echo string
		if echo, err = br.ReadString('\n'); err == nil && echo != "held-1\n" {
			err = fmt.Errorf("echo %q", echo)
		}
	}
	if err != nil {
		cn.Close()
		return nil, nil, err
	}
	return cn, br, nil
}

// holdRoundTrip sends msg on a held connection and expects it back within
// nsConnDeadline.
func holdRoundTrip(cn net.Conn, br *bufio.Reader, msg string) error {
	cn.SetDeadline(time.Now().Add(nsConnDeadline))
	if _, err := io.WriteString(cn, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	echo, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if echo != msg {
		return fmt.Errorf("echo %q, want %q", echo, msg)
	}
	return nil
}

// Stop ends the client and waits for the connections in flight.
func (c *nsClient) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// snapshot returns the finished attempts in the order they started.
func (c *nsClient) snapshot() []nsAttempt {
	c.mu.Lock()
	as := append([]nsAttempt(nil), c.attempts...)
	c.mu.Unlock()
	sort.SliceStable(as, func(i, j int) bool { return as[i].start.Before(as[j].start) })
	return as
}

// firstServedBy returns, among the attempts started at or after since and
// served by node, the one that completed first.
func (c *nsClient) firstServedBy(node string, since time.Time) (nsAttempt, bool) {
	var first nsAttempt
	ok := false
	for _, a := range c.snapshot() {
		if a.err == nil && a.node == node && !a.start.Before(since) && (!ok || a.end.Before(first.end)) {
			first, ok = a, true
		}
	}
	return first, ok
}

// finalRun returns the first of the latest attempts (in start order) that
// were all served by node and started at or after since, if there are at
// least k of them.
func (c *nsClient) finalRun(node string, since time.Time, k int) (nsAttempt, bool) {
	as := c.snapshot()
	i := len(as)
	for i > 0 && as[i-1].err == nil && as[i-1].node == node && !as[i-1].start.Before(since) {
		i--
	}
	if len(as)-i < k {
		return nsAttempt{}, false
	}
	return as[i], true
}

// startedIn returns the attempts that started in [from, to).
func startedIn(as []nsAttempt, from, to time.Time) []nsAttempt {
	var out []nsAttempt
	for _, a := range as {
		if !a.start.Before(from) && a.start.Before(to) {
			out = append(out, a)
		}
	}
	return out
}

// summarizeAttempts counts attempts per serving node, and the failed ones,
// and the longest one.
func summarizeAttempts(as []nsAttempt) (byNode map[string]int, failed []nsAttempt, slowest time.Duration) {
	byNode = map[string]int{}
	for _, a := range as {
		slowest = max(slowest, a.end.Sub(a.start))
		if a.err != nil {
			failed = append(failed, a)
			continue
		}
		byNode[a.node]++
	}
	return byNode, failed, slowest
}
