package benchrun

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/lab"
)

func good() Options {
	return Options{Duration: 10 * time.Second, Idle: 2000, IdleNodes: 1, IdleHold: 30 * time.Second, ConnWorkers: 32,
		Only: map[string]bool{"throughput": true, "latency": true, "connrate": true, "idle": true}, Loopback: true}
}

// TestValidate steps through every rule; each bad value gets the message
// that names its flag.
func TestValidate(t *testing.T) {
	if err := good().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		change func(*Options)
		want   string // "" for valid
	}{
		{func(o *Options) { o.Duration = 0 }, "--duration 0s: must be between 0 and 1h"},
		{func(o *Options) { o.Duration = 2 * time.Hour }, "--duration 2h0m0s: must be between 0 and 1h"},
		{func(o *Options) { o.Idle = 0 }, "--idle 0: must be between 1 and 1000000"},
		{func(o *Options) { o.Idle = 1_000_001 }, "--idle 1000001: must be between 1 and 1000000"},
		{func(o *Options) { o.IdleNodes = 0 }, "--idle-nodes 0: must be between 1 and 32"},
		{func(o *Options) { o.IdleNodes = 33 }, "--idle-nodes 33: must be between 1 and 32"},
		{func(o *Options) { o.Idle, o.IdleNodes = 2, 3 }, "--idle 2: fewer connections than --idle-nodes 3"},
		{func(o *Options) { o.NetnsLoss = -1 }, "--netns-loss -1: must be between 0 and 50 (percent)"},
		{func(o *Options) { o.NetnsLoss, o.Netns = 51, true }, "--netns-loss 51: must be between 0 and 50 (percent)"},
		{func(o *Options) { o.NetnsLoss = 1 }, "--netns-loss needs --netns"},
		{func(o *Options) { o.NetnsLoss, o.Netns = 1, true }, ""},
		{func(o *Options) { o.ConnWorkers = 0 }, "--conn-workers 0: must be between 1 and 256"},
		{func(o *Options) { o.ConnWorkers = 257 }, "--conn-workers 257: must be between 1 and 256"},
		{func(o *Options) { o.IdleHold = -time.Second }, "--idle-hold -1s: must be between 0 and 1h"},
		{func(o *Options) { o.IdleHold = 0 }, ""},
		{func(o *Options) { o.Only = nil }, "--only: no measurement selected"},
		{func(o *Options) { o.Loopback = false }, "--loopback=false: nothing to run without --netns"},
		{func(o *Options) { o.Loopback, o.Netns = false, true }, ""},
		{func(o *Options) { o.Loopback, o.Netns, o.Only = false, true, map[string]bool{"idle": true} },
			"--netns measures throughput, latency and connrate; --only selects none of them"},
		{func(o *Options) { o.Only = map[string]bool{"idle": true} }, ""},
	} {
		o := good()
		tc.change(&o)
		err := o.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && err.Error() != tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", o, err, tc.want)
		}
	}
}

func TestParseOnly(t *testing.T) {
	got, err := ParseOnly(" latency, ,connrate,latency")
	if err != nil || !reflect.DeepEqual(got, map[string]bool{"latency": true, "connrate": true}) {
		t.Errorf("ParseOnly = %v, %v", got, err)
	}
	if _, err := ParseOnly("latency,nope"); err == nil || err.Error() != `--only: unknown measurement "nope" (allowed: throughput,latency,connrate,idle,scale)` {
		t.Errorf("ParseOnly(nope) = %v", err)
	}
	if _, err := ParseOnly(" , "); err == nil || err.Error() != "--only: no measurement selected" {
		t.Errorf("ParseOnly(empty) = %v", err)
	}
	if all, err := ParseOnly(strings.Join(Measurements, ",")); err != nil || len(all) != len(Measurements) {
		t.Errorf("ParseOnly(all) = %v, %v", all, err)
	}
	if got, err := ParseOnly("scale"); err != nil || !got["scale"] {
		t.Errorf("ParseOnly(scale) = %v, %v", got, err)
	}
}

// TestValidateScale: --nodes and --scale-idle are checked only when the
// scale measurement runs.
func TestValidateScale(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		idle  time.Duration
		want  string
	}{
		{25, 20 * time.Second, ""},
		{4, time.Second, ""},
		{3, 20 * time.Second, "--nodes 3: must be between 4 and 300"},
		{301, 20 * time.Second, "--nodes 301: must be between 4 and 300"},
		{25, 500 * time.Millisecond, "--scale-idle 500ms: must be between 1s and 1h"},
	} {
		o := good()
		o.Only = map[string]bool{"scale": true}
		o.Nodes, o.ScaleIdle = tc.nodes, tc.idle
		err := o.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && err.Error() != tc.want) {
			t.Errorf("nodes %d idle %v: %v, want %q", tc.nodes, tc.idle, err, tc.want)
		}
		o.Only = map[string]bool{"idle": true} // not checked without scale
		if err := o.Validate(); err != nil {
			t.Errorf("nodes %d without scale: %v", tc.nodes, err)
		}
	}
}

// TestScaleTopology: one exporter per site, every node imports echo
// preferring its own site then the next, all join the first.
func TestScaleTopology(t *testing.T) {
	env := &lab.Env{Dir: t.TempDir(), KeyFile: "k"}
	ports := make([]int, 3*10)
	for i := range ports {
		ports[i] = 20000 + i
	}
	targets := []string{"t0", "t1", "t2", "t3"}
	nodes := scaleTopology(env, 10, ports, targets)
	exporters := map[string]string{}
	for i, sn := range nodes {
		c := sn.cfg
		if c.Site != fmt.Sprintf("s%d", i%4) || len(c.Imports) != 1 || c.Imports[0].Name != "echo" ||
			!reflect.DeepEqual(c.Imports[0].Sites, []string{c.Site, fmt.Sprintf("s%d", (i+1)%4)}) {
			t.Errorf("node %d: %+v", i, c)
		}
		if (i == 0) != (len(c.Join) == 0) || (i > 0 && c.Join[0] != nodes[0].cfg.GossipBind) {
			t.Errorf("node %d joins %v", i, c.Join)
		}
		if sn.exporter != (len(c.Exports) == 1) || sn.exporter != (i < 4) {
			t.Errorf("node %d exports %+v", i, c.Exports)
		}
		if sn.exporter {
			if _, dup := exporters[c.Site]; dup || c.Exports[0].Target != targets[i] {
				t.Errorf("site %s: exporters %v, target %s", c.Site, exporters, c.Exports[0].Target)
			}
			exporters[c.Site] = c.Name
		}
	}
	if len(exporters) != 4 {
		t.Errorf("exporters %v", exporters)
	}
}

// TestCheckNoFile: each node's share of the idle connections plus 1,000
// must fit under the limit; an unknown limit or no idle run is not checked.
func TestCheckNoFile(t *testing.T) {
	o := good()
	o.Idle, o.IdleNodes = 18000, 1
	if err := o.checkNoFile(20000); err != nil {
		t.Errorf("18000 on one pair under 20000: %v", err)
	}
	o.Idle = 19001
	err := o.checkNoFile(20000)
	if err == nil || !strings.Contains(err.Error(), "is 19001 connections per node, which needs RLIMIT_NOFILE >= 20001; the hard limit is 20000") {
		t.Errorf("19001 on one pair: %v", err)
	}
	o.Idle, o.IdleNodes = 100000, 6 // 16667 per node
	if err := o.checkNoFile(20000); err != nil {
		t.Errorf("100000 over 6 pairs: %v", err)
	}
	o.IdleNodes = 5
	if err := o.checkNoFile(20000); err == nil {
		t.Errorf("100000 over 5 pairs (20000 per node) under 20000: no error")
	}
	if err := o.checkNoFile(0); err != nil {
		t.Errorf("unknown limit: %v", err)
	}
	o.Only = map[string]bool{"latency": true}
	if err := o.checkNoFile(20000); err != nil {
		t.Errorf("no idle run: %v", err)
	}
}
