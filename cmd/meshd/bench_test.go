package main

import (
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/benchrun"
)

// benchFlags runs benchOptions on meshd bench args.
func benchFlags(t *testing.T, args ...string) (o benchrun.Options, asJSON, asKV bool, err error) {
	t.Helper()
	cmd := benchCommand()
	cmd.Action = func(c *cli.Context) error {
		var f benchrun.Format
		o, f, err = benchOptions(c)
		asJSON, asKV = f.JSON, f.KV
		return nil
	}
	app := &cli.App{Commands: []*cli.Command{cmd}, ExitErrHandler: func(*cli.Context, error) {}}
	if rerr := app.Run(append([]string{"meshd", "bench"}, args...)); rerr != nil {
		t.Fatalf("meshd bench %v: %v", args, rerr)
	}
	return o, asJSON, asKV, err
}

// TestBenchOptions: the flags' defaults, --quick shortening only what is
// not set, the output formats, and a bad value exiting 2.
func TestBenchOptions(t *testing.T) {
	o, j, k, err := benchFlags(t)
	if err != nil || o.Duration != 10*time.Second || o.Idle != 2000 || o.IdleHold != 30*time.Second || o.IdleNodes != 1 ||
		o.ConnWorkers != 32 || !o.Loopback || o.Netns || len(o.Only) != 4 || !j || k {
		t.Errorf("defaults: %+v json %v kv %v err %v", o, j, k, err)
	}
	o, _, _, err = benchFlags(t, "--quick", "--idle", "50")
	if err != nil || o.Duration != 300*time.Millisecond || o.Idle != 50 || o.IdleHold != 500*time.Millisecond {
		t.Errorf("--quick --idle 50: %+v %v", o, err)
	}
	for _, tc := range []struct {
		args     []string
		json, kv bool
	}{
		{[]string{"--format", "kv"}, false, true},
		{[]string{"--format", "both"}, true, true},
		{[]string{"--json"}, true, false},
		{[]string{"--json", "--format", "kv"}, true, true},
	} {
		if _, j, k, err := benchFlags(t, tc.args...); err != nil || j != tc.json || k != tc.kv {
			t.Errorf("%v: json %v kv %v (%v), want %v %v", tc.args, j, k, err, tc.json, tc.kv)
		}
	}
	for _, args := range [][]string{{"--format", "xml"}, {"--only", "nope"}, {"--duration", "0s"}, {"--netns-loss", "1"}} {
		_, _, _, err := benchFlags(t, args...)
		if ec, ok := err.(cli.ExitCoder); !ok || ec.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit 2", args, err)
		}
	}
}
