// Package e2e drives real `meshd join` processes on loopback: real
// WireGuard (userspace), real yamux, real sockets. Nothing is mocked.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/node"
)

// meshdBin is the meshd binary built once by TestMain.
var meshdBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if code, ok := afWrapMain(); ok { // TestSystemdAddressFamilies' wrapper
		return code
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: getwd:", err)
		return 1
	}
	root := filepath.Dir(wd) // e2e/..
	dir, err := os.MkdirTemp("", "meshd-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	meshdBin = filepath.Join(dir, "meshd")
	args := []string{"build", "-o", meshdBin}
	if os.Getenv("MESHD_E2E_RACE") != "" {
		// The nodes themselves run with the race detector; see checkLogs.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/meshd")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/meshd failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// ---------------------------------------------------------------- ports

// freePort returns a port of 127.0.0.1 that is free for both TCP and UDP
// right now and that was not handed out before in this process
// (lab.FreePorts, which bench uses too).
func freePort(t testing.TB) int {
	t.Helper()
	p, err := lab.FreePorts(1)
	if err != nil {
		t.Fatalf("freePort: %v", err)
	}
	return p[0]
}

func addr(port int) string { return lab.Loopback(port) }

// portFree reports whether port is bindable on 127.0.0.1 for TCP and UDP.
func portFree(port int) error {
	l, err := net.Listen("tcp", addr(port))
	if err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr(port))
	if err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	u.Close()
	return nil
}

// ---------------------------------------------------------------- cluster

// cluster is a set of meshd nodes of one test (or benchmark), sharing a
// cluster key. The first node started is the others' join address.
type cluster struct {
	t        testing.TB
	dir      string // short temp dir: data dirs, configs, logs
	keyFile  string
	logLevel string       // log.level of every node: info unless set
	failover lab.Failover // the failover section of every node (zero: the defaults)

	mu    sync.Mutex
	nodes []*meshNode // guarded by mu
}

// exportSpec and importSpec are lab's typed config entries: every config
// e2e writes is rendered by lab.Node (internal/lab), the path bench and
// demo use too. An importSpec without Listen gets a free port.
type (
	exportSpec = lab.Export
	importSpec = lab.Import
)

// nodeSpec is what a test says about a node; the cluster fills in the
// rest of its lab.Node (data dir, ports, key file, join, log) in
// nodeConfig.
type nodeSpec struct {
	Name, Site string
	Exports    []exportSpec
	Imports    []importSpec
	KeyFile    string   // default: the cluster's key file
	Join       []string // default: the first node's gossip address (none for the first node); empty non-nil: none
	Flags      []string // extra flags after `meshd join --config FILE`
	Socket     string   // the control socket if not the config's (a --data-dir flag moves it)
	// TunnelAdvertise sets tunnel.advertise (a node lying about its endpoint).
	TunnelAdvertise string
	Metrics         bool       // serve metrics.listen on a free port (meshNode.Metrics)
	RelayListen     string     // relay.enabled on this address ("" = no relay)
	PKI             lab.PKI    // pki: the node's identity (pkiEnv.issue)
	Limits          lab.Limits // limits
	Extra           string     // YAML appended to the config, for keys lab.Node does not have
}

// meshNode is one `meshd join` process.
type meshNode struct {
	Name, Site string
	Dir        string // data_dir
	Config     string
	LogPath    string
	GossipPort int
	TunnelPort int
	Imports    map[string]string // import name -> listen address
	Flags      []string          // extra flags of `meshd join`
	Socket     string            // control socket for status; "" = found from Config
	Metrics    string            // metrics.listen address ("" = off): /metrics and the status page

	proc *lab.Proc // the `meshd join` process, once started (launch)
}

// newCluster makes the temp dir and the cluster key.
func newCluster(t testing.TB) *cluster { return newClusterIn(t, "me2e") }

// newClusterIn is newCluster with the temp dir named by pattern
// (os.MkdirTemp). At the end the nodes are killed, then their logs are
// checked for races and panics, and shown if the test failed.
func newClusterIn(t testing.TB, pattern string) *cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, logLevel: "info"}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Registered after RemoveAll and before any node's kill: runs after
	// every process is dead, before the logs are removed. Skipped tests
	// (known bugs) show them too; set MESHD_E2E_LOGS=1 to see the logs of
	// passing tests, MESHD_E2E_KEEP=DIR to keep the whole logs of failed
	// tests there.
	t.Cleanup(func() {
		if keep := os.Getenv("MESHD_E2E_KEEP"); keep != "" && t.Failed() {
			to := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
			if err := os.MkdirAll(to, 0o700); err == nil {
				for _, n := range c.all() {
					if b, err := os.ReadFile(n.LogPath); err == nil {
						os.WriteFile(filepath.Join(to, n.Name+".log"), b, 0o600)
					}
				}
				t.Logf("logs kept in %s", to)
			}
		}
		if t.Failed() || t.Skipped() || os.Getenv("MESHD_E2E_LOGS") != "" {
			for _, n := range c.all() {
				t.Logf("---- log of %s (%s), last lines ----\n%s", n.Name, n.LogPath, tail(n.LogPath, 80))
			}
		}
	})
	// Runs after the nodes are killed, before the logs are printed.
	t.Cleanup(func() {
		for _, n := range c.all() {
			log := n.logText()
			for _, bad := range []string{"WARNING: DATA RACE", "panic: ", "fatal error: "} {
				if strings.Contains(log, bad) {
					t.Errorf("%s's log contains %q", n.Name, bad)
				}
			}
		}
	})
	c.keyFile = c.newKeyFile("cluster.key")
	return c
}

// all returns the nodes started so far.
func (c *cluster) all() []*meshNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// add records n as one of the cluster's nodes and returns the first node
// (nil if n is the first).
func (c *cluster) add(n *meshNode) (first *meshNode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.nodes) > 0 {
		first = c.nodes[0]
	}
	c.nodes = append(c.nodes, n)
	return first
}

// newKeyFile runs `meshd keygen` and writes its output to a 0600 file.
func (c *cluster) newKeyFile(name string) string {
	c.t.Helper()
	out, errOut, code := runMeshd(c.t, 10*time.Second, "keygen")
	if code != 0 {
		c.t.Fatalf("meshd keygen: exit %d: %s", code, errOut)
	}
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// nodeConfig is the node's config (README "Configuration reference").
func (c *cluster) nodeConfig(n *meshNode, s nodeSpec, first *meshNode) lab.Node {
	cfg := lab.Node{Failover: c.failover, Name: s.Name, Site: s.Site, DataDir: n.Dir, KeyFile: s.KeyFile, Join: s.Join,
		GossipBind: addr(n.GossipPort), TunnelListen: addr(n.TunnelPort), TunnelAdvertise: s.TunnelAdvertise,
		TunnelMode: "userspace", RelayEnabled: s.RelayListen != "", RelayListen: s.RelayListen,
		Exports: s.Exports, MetricsListen: n.Metrics, LogLevel: c.logLevel, LogFormat: "text",
		PKI: s.PKI, Limits: s.Limits, Extra: s.Extra}
	if cfg.KeyFile == "" {
		cfg.KeyFile = c.keyFile
	}
	if cfg.Join == nil && first != nil {
		cfg.Join = []string{addr(first.GossipPort)}
	}
	for _, im := range s.Imports {
		im.Listen = n.Imports[im.Name]
		cfg.Imports = append(cfg.Imports, im)
	}
	return cfg
}

// configYAML renders the config file of n, a node of c.
func (c *cluster) configYAML(n *meshNode, s nodeSpec) string {
	var first *meshNode
	if all := c.all(); len(all) > 0 && all[0] != n {
		first = all[0]
	}
	return c.nodeConfig(n, s, first).YAML()
}

// start writes the node's config and starts `meshd join`.
func (c *cluster) start(s nodeSpec) *meshNode {
	c.t.Helper()
	n := &meshNode{
		Name: s.Name, Site: s.Site,
		Dir:        filepath.Join(c.dir, s.Name),
		Config:     filepath.Join(c.dir, s.Name+".yaml"),
		LogPath:    filepath.Join(c.dir, s.Name+".log"),
		GossipPort: freePort(c.t),
		TunnelPort: freePort(c.t),
		Imports:    map[string]string{},
		Flags:      s.Flags,
		Socket:     s.Socket,
	}
	if s.Metrics {
		n.Metrics = addr(freePort(c.t))
	}
	for _, im := range s.Imports {
		l := im.Listen
		if l == "" {
			l = addr(freePort(c.t))
		}
		n.Imports[im.Name] = l
	}
	if len(filepath.Join(n.Dir, "meshd.sock")) >= 100 {
		c.t.Fatalf("control socket path too long: %s", filepath.Join(n.Dir, "meshd.sock"))
	}
	first := c.add(n)
	launch(c.t, n, c.nodeConfig(n, s, first))
	if first == nil && s.Join == nil {
		// Others join this one: let it listen first, so that their first
		// join attempt succeeds instead of backing off.
		waitUp(c.t, n, 20*time.Second)
	}
	return n
}

// waitUp waits until n's control socket answers (it answers once gossip,
// tunnel, exports and imports are up).
func waitUp(t testing.TB, n *meshNode, d time.Duration) {
	t.Helper()
	waitFor(t, d, n.Name+" to answer status", func() (bool, string) {
		if !n.running() {
			t.Fatalf("%s exited: %v\n%s", n.Name, n.exitErr(), tail(n.LogPath, 20))
		}
		_, err := tryStatus(t, n)
		return err == nil, fmt.Sprint(err)
	})
}

// launch writes cfg to n.Config and starts `meshd join --config n.Config
// n.Flags...` (behind prefix, like ip netns exec NS, if any) as a
// lab.Proc logging to n.LogPath. At the end of the test the process is
// continued (it may be SIGSTOPped) and killed.
func launch(tb testing.TB, n *meshNode, cfg lab.Node, prefix ...string) {
	tb.Helper()
	env := &lab.Env{Exe: meshdBin, Dir: filepath.Dir(n.Config), ChildEnv: childEnv()}
	p, err := env.StartWith(cfg, prefix, n.Flags)
	if err != nil {
		tb.Fatalf("start %s: %v", n.Name, err)
	}
	n.proc = p
	tb.Cleanup(func() { n.kill(tb) })
	if p.Config != n.Config || p.LogPath != n.LogPath {
		tb.Fatalf("%s: lab wrote config %s and log %s, want %s and %s", n.Name, p.Config, p.LogPath, n.Config, n.LogPath)
	}
}

// restart starts n's `meshd join` again, with its config file as it is
// now, its data dir (node key), ports and flags, once the process has
// exited; its log goes on in the same file.
func (n *meshNode) restart(tb testing.TB) {
	tb.Helper()
	select {
	case <-n.proc.Done():
	case <-time.After(10 * time.Second):
		tb.Fatalf("restart %s: process %d still running after 10 s", n.Name, n.proc.Pid())
	}
	if err := n.proc.Restart(); err != nil {
		tb.Fatal(err)
	}
}

// kill SIGKILLs the process if it still runs (continuing it first, in
// case it is stopped) and waits for it.
func (n *meshNode) kill(tb testing.TB) {
	if n.proc.Exited() {
		return
	}
	n.proc.Signal(syscall.SIGCONT)
	n.proc.Signal(syscall.SIGKILL)
	select {
	case <-n.proc.Done():
	case <-time.After(10 * time.Second):
		tb.Errorf("%s: process %d did not exit after SIGKILL", n.Name, n.proc.Pid())
	}
}

// running reports whether the process is still running.
func (n *meshNode) running() bool { return !n.proc.Exited() }

// exitErr is how the process ended (nil while it runs, or after exit 0).
func (n *meshNode) exitErr() error {
	if n.running() {
		return nil
	}
	return n.proc.WaitErr()
}

// signal sends sig to the process.
func (n *meshNode) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := n.proc.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, n.Name, err)
	}
}

// waitExit waits up to d for the process to exit and returns its exit code.
func (n *meshNode) waitExit(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-n.proc.Done():
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s", n.Name, d)
	}
	err := n.proc.WaitErr()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("%s: wait: %v", n.Name, err)
	}
	return 0
}

// logText returns the node's log so far.
func (n *meshNode) logText() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}

// childEnv is the environment of meshd subprocesses: ours without a
// cluster key that would change config loading.
func childEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "MESHD_CLUSTER_KEY=") {
			env = append(env, e)
		}
	}
	return env
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------- commands

// runMeshd runs the meshd binary with args (bounded by d) and returns its
// stdout, stderr and exit code.
func runMeshd(t testing.TB, d time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, meshdBin, args...)
	cmd.Env = childEnv()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("meshd %s: did not finish within %s (stderr: %s)", strings.Join(args, " "), d, e.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("meshd %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// tryStatus runs `meshd status --json --config` for n.
func tryStatus(t testing.TB, n *meshNode) (node.Status, error) {
	t.Helper()
	var st node.Status
	args := []string{"status", "--json", "--config", n.Config}
	if n.Socket != "" {
		args = []string{"status", "--json", "--socket", n.Socket}
	}
	out, errOut, code := runMeshd(t, 15*time.Second, args...)
	if code != 0 {
		return st, fmt.Errorf("meshd status %s: exit %d: %s", n.Name, code, strings.TrimSpace(errOut))
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("meshd status %s: decode: %v\n%s", n.Name, err, out)
	}
	return st, nil
}

// status is tryStatus that fails the test on error.
func status(t testing.TB, n *meshNode) node.Status {
	t.Helper()
	st, err := tryStatus(t, n)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitFor polls cond every interval until it returns ok or d passes; then
// it fails the test with what and cond's last explanation.
func waitFor(t testing.TB, d time.Duration, what string, cond func() (ok bool, why string)) {
	t.Helper()
	testutil.WaitFor(t, d, what, cond)
}

// peer returns the named peer of st.
func peer(st node.Status, name string) (node.PeerStatus, bool) {
	for _, p := range st.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return node.PeerStatus{}, false
}

// service returns the named service of st.
func service(st node.Status, name string) (node.ServiceStatus, bool) {
	for _, s := range st.Services {
		if s.Name == name {
			return s, true
		}
	}
	return node.ServiceStatus{}, false
}

// serviceEndpoint returns the endpoint of s on the named node.
func serviceEndpoint(s node.ServiceStatus, nodeName string) (node.EndpointStatus, bool) {
	for _, e := range s.Endpoints {
		if e.Node == nodeName {
			return e, true
		}
	}
	return node.EndpointStatus{}, false
}

// waitMesh waits until every node sees every other as alive with a direct
// path (a WireGuard session up).
func waitMesh(t *testing.T, d time.Duration, nodes ...*meshNode) {
	t.Helper()
	waitFor(t, d, "full mesh alive, direct where a session is up", func() (bool, string) {
		for _, a := range nodes {
			st, err := tryStatus(t, a)
			if err != nil {
				return false, err.Error()
			}
			for _, b := range nodes {
				if a == b {
					continue
				}
				p, ok := peer(st, b.Name)
				if !ok {
					return false, fmt.Sprintf("%s does not list %s", a.Name, b.Name)
				}
				// Sessions are made on demand (README "Performance", fleet scale): a pair without
				// traffic holds none, and shows no path and no RTT.
				switch {
				case p.State != "alive":
					return false, fmt.Sprintf("%s sees %s %s", a.Name, b.Name, p.State)
				case p.Session == node.SessionUp && p.Path != node.PathDirect:
					return false, fmt.Sprintf("%s sees %s session up, path %s", a.Name, b.Name, p.Path)
				case p.Session == node.SessionIdle && (p.Path != node.PathNone || p.RTTMs != nil):
					return false, fmt.Sprintf("%s sees %s idle yet path %s rtt %v", a.Name, b.Name, p.Path, p.RTT())
				case p.Session != node.SessionUp && p.Session != node.SessionIdle:
					return false, fmt.Sprintf("%s sees %s session %q", a.Name, b.Name, p.Session)
				}
			}
		}
		return true, ""
	})
}

// countLines counts the lines of text containing sub.
func countLines(text, sub string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			n++
		}
	}
	return n
}
