package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/failover"
)

// TestDrill runs a failover drill of site onprem from a cloud node whose
// import prefers onprem, while a client keeps connecting through the same
// import: the report and the client both see the failover and failback.
func TestDrill(t *testing.T) {
	c := newCluster(t)
	beOn := startBackend(t, "127.0.0.1:0")
	beCl := startBackend(t, "127.0.0.1:0")
	c1 := c.start(nodeSpec{Name: "cloud-1", Site: "cloud",
		Imports: []importSpec{{Name: "echo", Sites: []string{"onprem", "cloud"}}}})
	o1 := c.start(nodeSpec{Name: "onprem-1", Site: "onprem",
		Exports: []exportSpec{{Name: "echo", Target: beOn.Addr()}}})
	c2 := c.start(nodeSpec{Name: "cloud-2", Site: "cloud",
		Exports: []exportSpec{{Name: "echo", Target: beCl.Addr()}}})
	waitMesh(t, 20*time.Second, c1, o1, c2)
	waitFor(t, 15*time.Second, "cloud-1 to measure an RTT to both exporters", func() (bool, string) {
		st, err := tryStatus(t, c1)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range []string{"onprem-1", "cloud-2"} {
			if p, _ := peer(st, n); p.RTT() <= 0 {
				return false, fmt.Sprintf("%s: %+v", n, p)
			}
		}
		return true, ""
	})
	imp := c1.Imports["echo"]
	if err := exchange(imp, 0, 1, 64, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if beOn.dataConns.Load() != 1 {
		t.Fatalf("before the drill the connection did not go to onprem-1 (onprem %d, cloud %d)", beOn.dataConns.Load(), beCl.dataConns.Load())
	}

	// A client connecting every 100 ms through the import during the drill.
	const dur = 4 * time.Second
	stop := make(chan struct{})
	var clientOK, clientFailed, clientMax atomic.Int64
	var clientErr atomic.Value
	var wg sync.WaitGroup
	stopClient := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopClient() // also when the test fails early
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			t0 := time.Now()
			err := exchange(imp, i, 1, 64, 10*time.Second)
			if d := int64(time.Since(t0)); d > clientMax.Load() {
				clientMax.Store(d) // only this goroutine stores
			}
			if err != nil {
				clientFailed.Add(1)
				clientErr.CompareAndSwap(nil, err.Error())
			} else {
				clientOK.Add(1)
			}
		}
	}()
	start := time.Now()
	out, errOut, code := runMeshd(t, dur+60*time.Second, "drill", "--site", "onprem", "--duration", dur.String(), "--json", "--config", c1.Config)
	took := time.Since(start)

	stopClient()
	if code != 0 {
		t.Fatalf("meshd drill: exit %d: %s", code, errOut)
	}
	t.Logf("drill took %s: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
	var rep failover.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("drill --json output: %v\n%s", err, out)
	}
	if rep.Site != "onprem" || rep.DurationMS < dur.Milliseconds()*9/10 || rep.DurationMS > dur.Milliseconds()*3/2 {
		t.Errorf("report site %q duration_ms %d, want onprem and about %d", rep.Site, rep.DurationMS, dur.Milliseconds())
	}
	if len(rep.Services) != 1 {
		t.Fatalf("report services: %+v, want just echo", rep.Services)
	}
	s := rep.Services[0]
	if s.Name != "echo" || s.Probes < int(dur/(100*time.Millisecond))/2 {
		t.Errorf("echo: name %q probes %d, want echo with ~%d probes", s.Name, s.Probes, dur/(100*time.Millisecond))
	}
	if s.During != "cloud-2" {
		t.Errorf("echo: during %q, want cloud-2", s.During)
	}

	// The report: onprem-1 served before, cloud-2 during (within 3 s of
	// the cut, counted when a probe completed), onprem-1 again after, and
	// no probe failed since cloud-2 was healthy throughout.
	if s.RTOMS <= 0 || s.RTOMS > 3000 {
		t.Errorf("echo: rto_ms %d, want a failover within 3 s", s.RTOMS)
	}
	if s.Before != "onprem-1" {
		t.Errorf("echo: before %q, want onprem-1", s.Before)
	}
	if s.Failed != 0 {
		t.Errorf("echo: %d probes failed, want none (cloud-2 was healthy throughout)", s.Failed)
	}
	if s.FailbackMS < 0 || s.FailbackMS > 10000 {
		t.Errorf("echo: failback_ms %d, want a failback within 10 s", s.FailbackMS)
	}
	if s.After != "onprem-1" {
		t.Errorf("echo: after %q, want onprem-1", s.After)
	}

	// The client saw what the probes saw: no failures, cloud-2 served
	// during the drill.
	t.Logf("client during the drill: %d ok, %d failed, slowest %s; backends: onprem %d, cloud %d",
		clientOK.Load(), clientFailed.Load(), time.Duration(clientMax.Load()).Round(time.Millisecond), beOn.dataConns.Load(), beCl.dataConns.Load())
	if clientFailed.Load() != 0 {
		t.Errorf("%d client connections failed during the drill although cloud-2 was healthy; first: %v", clientFailed.Load(), clientErr.Load())
	}
	if beCl.dataConns.Load() == 0 {
		t.Errorf("no client connection went to cloud-2 during the drill")
	}

	// Restored: new connections go to onprem-1 again (the drill's report
	// says after = onprem-1), and the text form of a drill is readable.
	before := beOn.dataConns.Load()
	waitFor(t, 15*time.Second, "connections to go to onprem-1 again after the drill", func() (bool, string) {
		if err := exchange(imp, 0, 1, 64, 10*time.Second); err != nil {
			return false, err.Error()
		}
		return beOn.dataConns.Load() > before, "served by cloud-2"
	})
	out, errOut, code = runMeshd(t, 60*time.Second, "drill", "--site", "onprem", "--duration", "1s", "--config", c1.Config)
	if code != 0 {
		t.Fatalf("meshd drill (text): exit %d: %s", code, errOut)
	}
	// A 1 s cut may end before it is even detected: check the form only.
	for _, w := range []string{"onprem", "echo", "onprem-1"} {
		if !strings.Contains(out, w) {
			t.Errorf("drill text report lacks %q:\n%s", w, out)
		}
	}
}
