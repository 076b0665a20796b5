package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/node"
)

// fakeMeshd writes a shell script standing in for the meshd binary: it
// logs its arguments, and leaves on SIGTERM (logging "bye") or exits at
// once with status 3 when its config contains "exit-now".
func fakeMeshd(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meshd")
	script := `#!/bin/sh
echo "args: $*"
if grep -q exit-now "$3"; then echo "bad config"; exit 3; fi
trap 'echo bye; exit 0' TERM
echo trapped
i=0
while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestEnv(t *testing.T) *Env {
	t.Helper()
	e, err := NewEnv(fakeMeshd(t), "lab-test-", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// TestEnvStartStop: the config is written where the process is told to
// find it, the log is captured, SIGTERM stops the node, and Close removes
// everything.
func TestEnvStartStop(t *testing.T) {
	e := newTestEnv(t)
	if b, err := os.ReadFile(e.KeyFile); err != nil || len(strings.TrimSpace(string(b))) != 44 {
		t.Fatalf("cluster key %q: %v", b, err)
	}
	n := e.Node("n1", "a")
	if n.DataDir != filepath.Join(e.Dir, "n1") || n.Socket != filepath.Join(e.Dir, "n1.sock") || n.LogLevel != "warn" || n.KeyFile != e.KeyFile {
		t.Fatalf("Env.Node = %+v", n)
	}
	p, err := e.Start(n)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if b, err := os.ReadFile(p.Config); err != nil || string(b) != n.YAML() {
		t.Fatalf("config file %q: %v", b, err)
	}
	waitLog(t, p, "args: join --config "+p.Config+"\ntrapped")
	if p.Exited() {
		t.Fatal("exited early")
	}
	t0 := time.Now()
	p.Stop()
	if !p.Exited() || time.Since(t0) > 4*time.Second {
		t.Fatalf("Stop: exited %v after %v", p.Exited(), time.Since(t0))
	}
	if err := p.WaitErr(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if !strings.HasSuffix(p.LogTail(), "bye") {
		t.Errorf("log tail %q, want the SIGTERM handler's bye", p.LogTail())
	}
	p.Stop() // twice is fine
	e.Close()
	if _, err := os.Stat(e.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s: %v", e.Dir, err)
	}
}

// TestSignalKill: SIGSTOP freezes the node, SIGCONT thaws it, Kill ends
// it without the SIGTERM handler.
func TestSignalKill(t *testing.T) {
	e := newTestEnv(t)
	p, err := e.Start(e.Node("n2", "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitLog(t, p, "trapped")
	state := func() string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
		if f := strings.Fields(string(b)); len(f) > 2 {
			return f[2]
		}
		return ""
	}
	waitState := func(want string) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if state() == want {
				return
			}
		}
		t.Fatalf("process state %q, want %q", state(), want)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState("T")
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); state() == "T" && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
	}
	if state() == "T" {
		t.Fatal("still stopped after SIGCONT")
	}
	p.Kill()
	if !p.Exited() || p.WaitErr() == nil || strings.Contains(p.LogTail(), "bye") {
		t.Errorf("Kill: exited %v, err %v, log %q", p.Exited(), p.WaitErr(), p.LogTail())
	}
	if err := p.Signal(syscall.SIGCONT); err == nil {
		t.Errorf("Signal after exit: no error")
	}
}

// TestRestartFlags: extra join flags reach the process, and Restart runs
// it again with the same arguments, appending to its log.
func TestRestartFlags(t *testing.T) {
	e := newTestEnv(t)
	p, err := e.StartWith(e.Node("n3", "a"), nil, []string{"--log-level", "debug"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.Restart(); err == nil {
		t.Fatal("Restart of a running node: no error")
	}
	waitLog(t, p, "args: join --config "+p.Config+" --log-level debug\ntrapped")
	p.Stop()
	pid := p.Pid()
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if p.Exited() || p.Pid() == pid {
		t.Fatalf("after Restart: exited %v, pid %d (was %d)", p.Exited(), p.Pid(), pid)
	}
	waitLog(t, p, "trapped\nbye\nargs: join --config "+p.Config+" --log-level debug\ntrapped")
	p.Stop()
	if !p.Exited() || p.WaitErr() != nil {
		t.Errorf("second Stop: exited %v, %v", p.Exited(), p.WaitErr())
	}
}

func waitLog(t *testing.T, p *Proc, want string) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(p.LogTail(), want) {
			return
		}
	}
	t.Fatalf("log of %s never had %q: %q", p.Name, want, p.LogTail())
}

// TestWaitReadyExit: a node that exits makes WaitReady fail at once with
// its exit status and log.
func TestWaitReadyExit(t *testing.T) {
	e := newTestEnv(t)
	n := e.Node("bad", "a")
	n.Extra = "# exit-now\n"
	p, err := e.Start(n)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = WaitReady(context.Background(), 30*time.Second, p, nil, Want{}, func(context.Context) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "node bad exited (exit status 3)") || !strings.Contains(err.Error(), "bad config") {
		t.Fatalf("WaitReady: %v", err)
	}
	if time.Since(t0) > 10*time.Second {
		t.Errorf("took %v to notice the exit", time.Since(t0))
	}
}

// TestWaitReady: the status is polled until it has what is wanted, then
// ping must pass too; on timeout the error says what was missing last.
func TestWaitReady(t *testing.T) {
	e := newTestEnv(t)
	n := e.Node("imp", "b")
	p, err := e.Start(n)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	var polls atomic.Int32
	ready := node.Status{
		Peers:    []node.PeerStatus{{Name: "exp", State: "alive", Up: true, Path: node.PathDirect}},
		Services: []node.ServiceStatus{{Name: "echo", Endpoints: []node.EndpointStatus{{Node: "exp", Healthy: true}}}},
		Imports:  []node.ImportStatus{{Name: "echo"}},
	}
	ln, err := net.Listen("unix", p.Sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := node.Status{}
		if polls.Add(1) > 3 {
			st = ready
		}
		json.NewEncoder(w).Encode(st)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	want := Want{Peers: []string{"exp"}, Services: []string{"echo"}, Endpoints: 1, Imports: 1}
	var pings atomic.Int32
	err = WaitReady(context.Background(), 20*time.Second, p, nil, want, func(context.Context) error {
		if pings.Add(1) < 2 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || polls.Load() < 5 || pings.Load() != 2 {
		t.Fatalf("WaitReady: %v after %d polls and %d pings", err, polls.Load(), pings.Load())
	}

	want.Endpoints = 2
	err = WaitReady(context.Background(), 300*time.Millisecond, p, nil, want, func(context.Context) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "mesh not ready within 300ms on imp: service echo: 1 healthy endpoints, want 2") {
		t.Fatalf("WaitReady with 2 endpoints wanted: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WaitReady(ctx, time.Minute, p, nil, want, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitReady, cancelled: %v", err)
	}
}

// TestWantMissing steps through the readiness rules.
func TestWantMissing(t *testing.T) {
	peer := func(name, state string, up bool, path string) node.PeerStatus {
		return node.PeerStatus{Name: name, State: state, Up: up, Path: path}
	}
	svc := func(name string, healthy ...bool) node.ServiceStatus {
		s := node.ServiceStatus{Name: name}
		for _, h := range healthy {
			s.Endpoints = append(s.Endpoints, node.EndpointStatus{Healthy: h})
		}
		return s
	}
	want := Want{Peers: []string{"e1", "e2"}, Services: []string{"sink", "echo"}, Endpoints: 2, Imports: 2}
	ok := node.Status{
		Peers:    []node.PeerStatus{peer("e1", "alive", true, "direct"), peer("e2", "alive", true, "direct")},
		Services: []node.ServiceStatus{svc("sink", true, true), svc("echo", true, false, true)},
		Imports:  make([]node.ImportStatus, 2),
	}
	for _, tc := range []struct {
		name   string
		change func(*node.Status)
		want   string
	}{
		{"ready", func(*node.Status) {}, ""},
		{"peer missing", func(s *node.Status) { s.Peers = s.Peers[:1] }, "peer e2 not up"},
		{"peer suspect", func(s *node.Status) { s.Peers[0].State = "suspect" }, "peer e1 not up"},
		{"peer down", func(s *node.Status) { s.Peers[1].Up = false }, "peer e2 not up"},
		{"peer relayed", func(s *node.Status) { s.Peers[0].Path = node.PathRelay }, "peer e1 not up"},
		{"service unhealthy", func(s *node.Status) { s.Services[0].Endpoints[1].Healthy = false }, "service sink: 1 healthy endpoints, want 2"},
		{"service missing", func(s *node.Status) { s.Services = s.Services[:1] }, "service echo: 0 healthy endpoints, want 2"},
		{"imports short", func(s *node.Status) { s.Imports = s.Imports[:1] }, "1 imports, want 2"},
	} {
		st := ok
		st.Peers = append([]node.PeerStatus(nil), ok.Peers...)
		st.Services = []node.ServiceStatus{svc("sink", true, true), svc("echo", true, false, true)}
		tc.change(&st)
		if got := want.Missing(st); got != tc.want {
			t.Errorf("%s: Missing = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestChildEnvDone: the nodes get Env.ChildEnv as their environment, not
// this process's, and Done is closed when the process exits.
func TestChildEnvDone(t *testing.T) {
	e := newTestEnv(t)
	script := filepath.Join(t.TempDir(), "env-meshd")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"var=$LAB_VAR home=$HOME\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.Exe = script
	t.Setenv("HOME", "/from-parent")
	e.ChildEnv = []string{"LAB_VAR=child"}
	p, err := e.Start(e.Node("n4", "a"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the process exited")
	}
	if !p.Exited() || p.WaitErr() != nil {
		t.Fatalf("exited %v, %v", p.Exited(), p.WaitErr())
	}
	if got := p.LogTail(); got != "var=child home=" {
		t.Errorf("log %q, want the child environment only", got)
	}
}
