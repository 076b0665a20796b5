package benchrun

import (
	"reflect"
	"strings"
	"testing"
	"time"
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
	if _, err := ParseOnly("latency,nope"); err == nil || err.Error() != `--only: unknown measurement "nope" (allowed: throughput,latency,connrate,idle)` {
		t.Errorf("ParseOnly(nope) = %v", err)
	}
	if _, err := ParseOnly(" , "); err == nil || err.Error() != "--only: no measurement selected" {
		t.Errorf("ParseOnly(empty) = %v", err)
	}
	if all, err := ParseOnly(strings.Join(Measurements, ",")); err != nil || len(all) != len(Measurements) {
		t.Errorf("ParseOnly(all) = %v, %v", all, err)
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
