package demo

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/echo"
)

// TestConfigs pins the demo's topology: two sites of two nodes, echo
// exported once per site, imported on onprem-1 and cloud-2 preferring
// onprem, everything on loopback with kernel-picked ports.
func TestConfigs(t *testing.T) {
	cfgs := Configs("/d", make([]byte, 32), "127.0.0.1:1", "127.0.0.1:2")
	var names, sites []string
	for _, c := range cfgs {
		names, sites = append(names, c.Name), append(sites, c.Site)
		if c.Gossip.Bind != netip.MustParseAddrPort("127.0.0.1:0") || c.Tunnel.Listen != netip.MustParseAddrPort("127.0.0.1:0") ||
			c.Control.Socket != "/d/"+c.Name+".sock" || c.DataDir != "/d/"+c.Name || len(c.Cluster.Key) != 32 {
			t.Errorf("%s: %+v", c.Name, c)
		}
	}
	if !reflect.DeepEqual(names, Names) || !reflect.DeepEqual(sites, []string{"onprem", "onprem", "cloud", "cloud"}) {
		t.Errorf("names %v sites %v", names, sites)
	}
	if len(cfgs[1].Exports) != 1 || cfgs[1].Exports[0].Target != "127.0.0.1:1" || len(cfgs[2].Exports) != 1 || cfgs[2].Exports[0].Target != "127.0.0.1:2" ||
		len(cfgs[0].Exports)+len(cfgs[3].Exports) != 0 {
		t.Errorf("exports: %+v %+v", cfgs[1].Exports, cfgs[2].Exports)
	}
	for _, i := range []int{0, 3} {
		if len(cfgs[i].Imports) != 1 || !reflect.DeepEqual(cfgs[i].Imports[0].Sites, []string{"onprem", "cloud"}) {
			t.Errorf("%s imports: %+v", cfgs[i].Name, cfgs[i].Imports)
		}
	}
	if len(cfgs[1].Imports)+len(cfgs[2].Imports) != 0 {
		t.Errorf("exporters import")
	}
}

// TestPush: checksummed round trips through a plain echo all pass, and a
// dead address counts every connection failed.
func TestPush(t *testing.T) {
	e, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := Push(ctx, e.Addr(), 8, 100_000)
	if r.Failed != 0 || r.Conns != 8 || r.Bytes != 1_600_000 || r.Elapsed <= 0 {
		t.Errorf("Push through echo: %+v", r)
	}
	addr := e.Addr()
	e.Close()
	if r := Push(ctx, addr, 3, 10); r.Failed != 3 || r.FirstErr == nil {
		t.Errorf("Push to a closed port: %+v", r)
	}
}

func TestDrillFailed(t *testing.T) {
	ok := failover.Report{Services: []failover.ServiceReport{{Name: "echo", RTOMS: 120}}}
	if err := DrillFailed(ok); err != nil {
		t.Errorf("DrillFailed(ok) = %v", err)
	}
	bad := failover.Report{Services: []failover.ServiceReport{{Name: "echo", RTOMS: 120}, {Name: "db", Failed: 2, RTOMS: -1}}}
	if err := DrillFailed(bad); err == nil || err.Error() != "drill: service db had 2 failed probes (rto -1ms)" {
		t.Errorf("DrillFailed(bad) = %v", err)
	}
	never := failover.Report{Services: []failover.ServiceReport{{Name: "echo", RTOMS: -1}}}
	if DrillFailed(never) == nil {
		t.Errorf("DrillFailed of a service that never recovered: nil")
	}
}

// TestDemo runs the whole demo small through Run, as `meshd demo` does:
// four real nodes converge, traffic passes checksummed, and a short drill
// fails over without a failed probe; Run reports each step and closes the
// mesh.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("four nodes and a drill")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var b strings.Builder
	err := Run(ctx, &b, RunOptions{Conns: 4, Size: 64 << 10, Drill: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	out := b.String()
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	for _, want := range []string{"meshd demo: 4 nodes on loopback", "mesh up in ", "pushed 4 concurrent connections through import echo on onprem-1",
		"  4 ok, 0 failed, 0.5 MiB in ", "  endpoint echo on onprem-2 (site onprem) healthy=true", "  onprem-1 -> ",
		"failover drill from cloud-2: site onprem cut off for 1s", "done in "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if i := strings.Index(out, "failover drill"); i < 0 || !strings.Contains(out[i+len("failover drill"):], "echo") {
		t.Errorf("drill report does not name echo:\n%s", out)
	}
}
