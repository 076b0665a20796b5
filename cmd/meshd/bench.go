package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/benchrun"
	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/internal/version"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "start two meshd nodes on loopback and measure them against direct TCP; print machine-readable results",
		UsageText: "meshd bench [--duration 10s] [--idle 2000] [--idle-nodes 1] [--idle-hold 30s] [--only throughput,latency,connrate,idle]\n" +
			"   [--netns [--loopback=false]] [--only scale --nodes 25 [--scale-idle 20s] [--scale-drill=false] [--scale-sigstop=false] [--scale-partition=false]] [--format json|kv|both] [--quick] [--verbose]",
		Description: benchrun.Help,
		Flags: []cli.Flag{
			&cli.Float64Flag{Name: "netns-loss", Usage: "with --netns: percent of UDP packets dropped leaving each namespace (iptables statistic), e.g. 1"},
			&cli.IntFlag{Name: "conn-workers", Value: 32, Usage: "concurrent clients of the connection rate measurement"},
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "length of each throughput run (latency and connrate runs take half)"},
			&cli.IntFlag{Name: "idle", Value: 2000, Usage: "idle connections to hold through the import"},
			&cli.IntFlag{Name: "idle-nodes", Value: 1, Usage: "importer/exporter pairs that carry the idle connections (1-32)"},
			&cli.DurationFlag{Name: "idle-hold", Value: 30 * time.Second, Usage: "how long to hold the idle connections before verifying them again"},
			&cli.StringFlag{Name: "only", Value: strings.Join(benchrun.Measurements, ","), Usage: "comma-separated measurements to run"},
			&cli.StringFlag{Name: "format", Value: "json", Usage: "output: json, kv (key=value lines) or both"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object (the default)"},
			&cli.BoolFlag{Name: "quick", Usage: "smoke test: 300ms runs, 100 idle connections held 500ms (explicit flags win)"},
			&cli.BoolFlag{Name: "netns", Usage: "also measure in two network namespaces: direct, plain wireguard-go (kernel TUN), meshd userspace and kernel mode (root)"},
			&cli.BoolFlag{Name: "loopback", Value: true, Usage: "run the loopback measurements (--loopback=false with --netns: namespaces only)"},
			&cli.BoolFlag{Name: "verbose", Usage: "show the nodes' logs on stderr"},
			&cli.IntFlag{Name: "nodes", Value: 25, Usage: "scale: meshd processes (4-300)"},
			&cli.DurationFlag{Name: "scale-idle", Value: 20 * time.Second, Usage: "scale: idle window for CPU and gossip figures"},
			&cli.BoolFlag{Name: "scale-drill", Value: true, Usage: "scale: then a drill of site s1 under client loops (--scale-drill=false skips it)"},
			&cli.BoolFlag{Name: "scale-sigstop", Value: true, Usage: "scale: then SIGSTOP of s2's exporter for 5 s under client loops"},
			&cli.BoolFlag{Name: "scale-partition", Value: true, Usage: "scale: then split {s0,s1} from {s2,s3} with nftables and measure the heal (root; skipped otherwise)"},
		},
		Action: runBench,
	}
}

// benchOptions maps the flags to the run's options (--quick shortens what
// is not set explicitly) and the output format.
func benchOptions(c *cli.Context) (benchrun.Options, benchrun.Format, error) {
	o := benchrun.Options{Duration: c.Duration("duration"), Idle: c.Int("idle"), IdleNodes: c.Int("idle-nodes"),
		IdleHold: c.Duration("idle-hold"), ConnWorkers: c.Int("conn-workers"), NetnsLoss: c.Float64("netns-loss"),
		Netns: c.Bool("netns"), Loopback: c.Bool("loopback"), Verbose: c.Bool("verbose"),
		Nodes: c.Int("nodes"), ScaleIdle: c.Duration("scale-idle"),
		ScaleDrill: c.Bool("scale-drill"), ScaleSigstop: c.Bool("scale-sigstop"), ScalePartition: c.Bool("scale-partition")}
	if c.Bool("quick") {
		o.Quick(c.IsSet)
	}
	var err error
	if o.Only, err = benchrun.ParseOnly(c.String("only")); err == nil {
		err = o.Validate()
	}
	var f benchrun.Format
	if err == nil {
		f, err = benchrun.ParseFormat(c.String("format"), c.IsSet("format"), c.Bool("json"))
	}
	if err != nil {
		return o, f, cli.Exit(err.Error(), 2)
	}
	return o, f, nil
}

func runBench(c *cli.Context) error {
	if err := noArgs(c, "bench"); err != nil {
		return err
	}
	o, f, err := benchOptions(c)
	if err != nil {
		return err
	}
	if o.Netns {
		if why := lab.NetnsPossible(); why != "" {
			return cli.Exit(why, 1)
		}
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	progress := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }
	rep, err := benchrun.Run(ctx, o, version.Get().String(), progress)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	if err := f.Write(c.App.Writer, rep.Results); err != nil {
		return err
	}
	switch {
	case rep.Interrupted:
		return cli.Exit("interrupted", 130)
	case rep.SetupErr != nil:
		return cli.Exit("bench: "+benchrun.FirstLine(rep.SetupErr.Error())+" (details above)", 1)
	case rep.Errors > 0:
		return cli.Exit(fmt.Sprintf("bench: %d errors (see above)", rep.Errors), 1)
	}
	return nil
}
