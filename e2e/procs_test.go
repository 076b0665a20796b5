package e2e

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestIdleNodeNarrowsScheduler: a node that carries no connection runs the
// Go scheduler on one P (internal/procs: on an idle node each wakeup of a
// second P is most of its CPU), and widens it before it serves its next
// connection, on the importer and the exporter.
func TestIdleNodeNarrowsScheduler(t *testing.T) {
	wide := runtime.GOMAXPROCS(0)
	if wide < 2 {
		t.Skip("one CPU here: the scheduler is one P already")
	}
	t.Setenv("GOMAXPROCS", "") // the nodes must not inherit a chosen width (procs stays off then)
	t.Setenv("MESHD_DEBUG_PROCS_IDLE", "1s")
	c := newCluster(t)
	be := startBackend(t, "127.0.0.1:0")
	exp := c.start(nodeSpec{Name: "exp", Site: "a", Metrics: true, Exports: []exportSpec{{Name: "echo", Target: be.Addr()}}})
	imp := c.start(nodeSpec{Name: "imp", Site: "a", Metrics: true, Imports: []importSpec{{Name: "echo"}}})
	waitMesh(t, 30*time.Second, exp, imp)

	procs := func(n *meshNode) float64 { return scrape(t, n.Metrics, "go_sched_gomaxprocs_threads") }
	waitProcs := func(what string, want float64) {
		t.Helper()
		waitFor(t, 20*time.Second, what, func() (bool, string) {
			for _, n := range []*meshNode{imp, exp} {
				if p := procs(n); p != want {
					return false, fmt.Sprintf("%s has %v Ps", n.Name, p)
				}
			}
			return true, ""
		})
	}
	waitProcs("both idle nodes on one P", 1)

	conn, err := net.DialTimeout("tcp", imp.Imports["echo"], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("a round trip through two nodes that were running on one P each, 64 B.")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != string(msg) {
		t.Fatalf("echo through the narrowed nodes: %q, %v", buf, err)
	}
	// While the connection is open, both carry it at full width, however
	// long it stays quiet.
	time.Sleep(1500 * time.Millisecond)
	for _, n := range []*meshNode{imp, exp} {
		if p := procs(n); p != float64(wide) {
			t.Errorf("%s runs on %v Ps while carrying a connection; want %d", n.Name, p, wide)
		}
	}
	conn.Close()
	waitProcs("both on one P again after the connection ended", 1)
}
