package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/internal/version"
)

var benchMeasurements = []string{"throughput", "latency", "connrate", "idle"}

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "start two meshd nodes on loopback and measure them against direct TCP; print machine-readable results",
		UsageText: "meshd bench [--duration 10s] [--idle 2000] [--idle-nodes 1] [--idle-hold 30s] [--only throughput,latency,connrate,idle]\n" +
			"   [--netns [--loopback=false]] [--format json|kv|both] [--quick] [--verbose]",
		Description: "Starts `meshd join` processes (this binary) on 127.0.0.1 with generated configs\n" +
			"in a temporary directory: an exporter in site a exporting `sink` and `echo` (both\n" +
			"served by the bench process) and an importer in site b importing them. Every\n" +
			"figure is measured through the import and, in the same run right before it,\n" +
			"directly against the target (key _direct), with the ratio meshd/direct (key\n" +
			"_ratio): the machine may be shared and noisy, the ratio is the comparable figure.\n" +
			"\n" +
			"  throughput  1 and 8 parallel streams into a discarding sink for --duration;\n" +
			"              MB/s = 10^6 bytes/s acknowledged by the sink (keys throughput_N_mbps)\n" +
			"  latency     64-byte echo round trips over 1 and 16 connections for --duration/2;\n" +
			"              p50/p99/max in microseconds (latency_N_p50_us, ...)\n" +
			"  connrate    --conn-workers concurrent clients (default 32): connect, one 64-byte\n" +
			"              round trip, close, for --duration/2; connections per second\n" +
			"              (conn_rate, per second)\n" +
			"  idle        --idle connections, each verified by a round trip, held --idle-hold,\n" +
			"              verified again, through --idle-nodes importer/exporter pairs of their\n" +
			"              own (see below)\n" +
			"\n" +
			"Idle connections (run first, on nodes started only for them, so that the RSS\n" +
			"figures are not inflated by the throughput runs): each of the --idle-nodes exporters\n" +
			"(site a) exports `echo` from its own backend process, the importers (site b) import\n" +
			"it with balance least_conn, and the connections are spread evenly over the importers\n" +
			"and held by client processes of at most 16,000 connections each, bound to source\n" +
			"addresses 127.0.0.2-254 in turn. No process holds more than its share, so a hard\n" +
			"RLIMIT_NOFILE of 20,000 allows up to ~19,000 connections per node: --idle 18000\n" +
			"(one pair) and --idle 100000 --idle-nodes 6 (6+6 nodes). Keys: idle_conns,\n" +
			"idle_setup_ms, idle_open_errors, idle_verify1_errors, idle_verify2_errors,\n" +
			"idle_backend_conns (held by the backends: the exporters' share), and RSS growth\n" +
			"per connection that node carried: idle_rss_per_conn_importer_bytes and\n" +
			"_exporter_bytes (mean over the nodes of the role), _importer_max_bytes,\n" +
			"_exporter_max_bytes, idle_rss_per_conn_mesh_bytes (growth of all nodes / conns);\n" +
			"with one pair idle_rss_{importer,exporter}_{before,after}_bytes, with more\n" +
			"idle_{importer,exporter}_N_conns and _N_rss_growth_bytes for each node.\n" +
			"\n" +
			"--netns (root, ip, /dev/net/tun) measures throughput, latency and connrate once more\n" +
			"between two network namespaces mb-<pid>-a (servers, exporters) and mb-<pid>-b\n" +
			"(clients, importers) joined by a veth pair 10.213.0.2 <-> 10.213.0.1, for four\n" +
			"paths in the same run: direct over the veth; plain wireguard-go on kernel TUN\n" +
			"devices (10.214.0.2 <-> .1, one bench-wgref process per namespace, no meshd) as\n" +
			"the reference for what WireGuard itself costs; meshd userspace; meshd kernel mode.\n" +
			"Clients and servers are bench-worker processes of this binary inside the\n" +
			"namespaces. Keys (FIG = netns_throughput_1, netns_throughput_8,\n" +
			"netns_latency_{1,16}_{p50,p99,max}, netns_conn_rate; UNIT = _mbps, _us or none):\n" +
			"  FIG UNIT, FIG_kernel UNIT, FIG_wireguard UNIT, FIG_direct UNIT   the figures\n" +
			"  FIG_vs_wireguard, FIG_kernel_vs_wireguard    meshd (userspace, kernel) / wireguard-go\n" +
			"  FIG_ratio, FIG_kernel_ratio, FIG_wireguard_ratio    the same / direct\n" +
			"  netns_errors (and FIG[_variant]_errors when not 0)\n" +
			"e.g. netns_throughput_1_wireguard_mbps, netns_latency_1_p50_vs_wireguard. The\n" +
			"namespaces, their veth and TUN devices and every process are removed at the end,\n" +
			"also on errors and Ctrl-C; namespaces of a killed earlier run are removed at start.\n" +
			"Traffic uses only loopback and the addresses above inside those namespaces.\n" +
			"--loopback=false skips the loopback measurements (namespaces only).\n" +
			"\n" +
			"Results go to stdout (one JSON object, or key=value lines); progress to stderr.\n" +
			"Exits 1 if any measurement had errors or a setup step failed (the results so far\n" +
			"are still printed, with setup_error), 2 for bad flags, 130 when interrupted.",
		Flags: []cli.Flag{
			&cli.Float64Flag{Name: "netns-loss", Usage: "with --netns: percent of UDP packets dropped leaving each namespace (iptables statistic), e.g. 1"},
			&cli.IntFlag{Name: "conn-workers", Value: 32, Usage: "concurrent clients of the connection rate measurement"},
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "length of each throughput run (latency and connrate runs take half)"},
			&cli.IntFlag{Name: "idle", Value: 2000, Usage: "idle connections to hold through the import"},
			&cli.IntFlag{Name: "idle-nodes", Value: 1, Usage: "importer/exporter pairs that carry the idle connections (1-32)"},
			&cli.DurationFlag{Name: "idle-hold", Value: 30 * time.Second, Usage: "how long to hold the idle connections before verifying them again"},
			&cli.StringFlag{Name: "only", Value: strings.Join(benchMeasurements, ","), Usage: "comma-separated measurements to run"},
			&cli.StringFlag{Name: "format", Value: "json", Usage: "output: json, kv (key=value lines) or both"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object (the default)"},
			&cli.BoolFlag{Name: "quick", Usage: "smoke test: 300ms runs, 100 idle connections held 500ms (explicit flags win)"},
			&cli.BoolFlag{Name: "netns", Usage: "also measure in two network namespaces: direct, plain wireguard-go (kernel TUN), meshd userspace and kernel mode (root)"},
			&cli.BoolFlag{Name: "loopback", Value: true, Usage: "run the loopback measurements (--loopback=false with --netns: namespaces only)"},
			&cli.BoolFlag{Name: "verbose", Usage: "show the nodes' logs on stderr"},
		},
		Action: runBench,
	}
}

type benchOpts struct {
	duration, idleHold time.Duration
	idle, idleNodes    int
	connWorkers        int
	netnsLoss          float64
	only               map[string]bool
	json, kv           bool
	verbose            bool
	netns, loopback    bool
}

func parseBenchOpts(c *cli.Context) (benchOpts, error) {
	o := benchOpts{duration: c.Duration("duration"), idle: c.Int("idle"), connWorkers: c.Int("conn-workers"), netnsLoss: c.Float64("netns-loss"), idleNodes: c.Int("idle-nodes"), idleHold: c.Duration("idle-hold"),
		only: map[string]bool{}, verbose: c.Bool("verbose"), netns: c.Bool("netns"), loopback: c.Bool("loopback")}
	if c.Bool("quick") {
		if !c.IsSet("duration") {
			o.duration = 300 * time.Millisecond
		}
		if !c.IsSet("idle") {
			o.idle = 100
		}
		if !c.IsSet("idle-hold") {
			o.idleHold = 500 * time.Millisecond
		}
	}
	if o.duration <= 0 || o.duration > time.Hour {
		return o, cli.Exit(fmt.Sprintf("--duration %v: must be between 0 and 1h", o.duration), 2)
	}
	if o.idle < 1 || o.idle > 1_000_000 {
		return o, cli.Exit(fmt.Sprintf("--idle %d: must be between 1 and 1000000", o.idle), 2)
	}
	if o.idleNodes < 1 || o.idleNodes > 32 {
		return o, cli.Exit(fmt.Sprintf("--idle-nodes %d: must be between 1 and 32", o.idleNodes), 2)
	}
	if o.idle < o.idleNodes {
		return o, cli.Exit(fmt.Sprintf("--idle %d: fewer connections than --idle-nodes %d", o.idle, o.idleNodes), 2)
	}
	if o.netnsLoss < 0 || o.netnsLoss > 50 {
		return o, cli.Exit(fmt.Sprintf("--netns-loss %v: must be between 0 and 50 (percent)", o.netnsLoss), 2)
	}
	if o.netnsLoss > 0 && !o.netns {
		return o, cli.Exit("--netns-loss needs --netns", 2)
	}
	if o.connWorkers < 1 || o.connWorkers > 256 {
		return o, cli.Exit(fmt.Sprintf("--conn-workers %d: must be between 1 and 256", o.connWorkers), 2)
	}
	if o.idleHold < 0 || o.idleHold > time.Hour {
		return o, cli.Exit(fmt.Sprintf("--idle-hold %v: must be between 0 and 1h", o.idleHold), 2)
	}
	for _, m := range strings.Split(c.String("only"), ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		ok := false
		for _, k := range benchMeasurements {
			ok = ok || k == m
		}
		if !ok {
			return o, cli.Exit(fmt.Sprintf("--only: unknown measurement %q (allowed: %s)", m, strings.Join(benchMeasurements, ",")), 2)
		}
		o.only[m] = true
	}
	if len(o.only) == 0 {
		return o, cli.Exit("--only: no measurement selected", 2)
	}
	if !o.loopback && !o.netns {
		return o, cli.Exit("--loopback=false: nothing to run without --netns", 2)
	}
	if !o.loopback && !o.only["throughput"] && !o.only["latency"] && !o.only["connrate"] {
		return o, cli.Exit("--netns measures throughput, latency and connrate; --only selects none of them", 2)
	}
	format := c.String("format")
	if c.Bool("json") && !c.IsSet("format") {
		format = "json"
	}
	switch format {
	case "json":
		o.json = true
	case "kv":
		o.kv = true
	case "both":
		o.json, o.kv = true, true
	default:
		return o, cli.Exit(fmt.Sprintf("--format %q: allowed: json, kv, both", format), 2)
	}
	if c.Bool("json") {
		o.json = true
	}
	return o, nil
}

func runBench(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("bench takes no arguments, got %q", c.Args().First()), 2)
	}
	o, err := parseBenchOpts(c)
	if err != nil {
		return err
	}
	if o.netns {
		if why := netnsPossible(); why != "" {
			return cli.Exit(why, 1)
		}
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
	started := time.Now()

	nofile, err := bench.RaiseNoFile()
	if err != nil {
		progress("cannot raise RLIMIT_NOFILE: %v", err)
	}
	// Each node carries its share of the idle connections (the importer
	// one accepted socket each, the exporter one backend socket each),
	// plus some slack for imbalance and its own descriptors.
	perNode := (o.idle + o.idleNodes - 1) / o.idleNodes
	if o.loopback && o.only["idle"] && nofile > 0 && uint64(perNode+1000) > nofile {
		return cli.Exit(fmt.Sprintf("--idle %d over --idle-nodes %d is %d connections per node, which needs RLIMIT_NOFILE >= %d; the hard limit is %d: add nodes, lower --idle or raise the limit",
			o.idle, o.idleNodes, perNode, perNode+1000, nofile), 2)
	}

	res := bench.NewResults()
	res.Set("date", started.UTC().Format(time.RFC3339))
	res.Set("meshd_version", version.Get().String())
	res.Set("go_version", runtime.Version())
	res.Set("os_arch", runtime.GOOS+"/"+runtime.GOARCH)
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		res.Set("kernel", strings.TrimSpace(string(b)))
	}
	res.Set("nproc", runtime.NumCPU())
	res.Set("gomaxprocs", runtime.GOMAXPROCS(0))
	res.Set("nofile_limit", int64(nofile))
	res.Set("duration_s", o.duration.Seconds())

	totalErrs := 0
	addErrs := func(key string, n int, first error) {
		res.Set(key, n)
		totalErrs += n
		if first != nil {
			progress("%s: %d errors, first: %v", key, n, first)
		}
	}
	var setupErr error
	// Idle connections run first, on nodes of their own, so the RSS
	// figures are not inflated by the throughput runs.
	if o.loopback && o.only["idle"] && ctx.Err() == nil {
		setupErr = runIdle(ctx, o, res, addErrs, progress)
	}
	if setupErr == nil && o.loopback && (o.only["throughput"] || o.only["latency"] || o.only["connrate"]) && ctx.Err() == nil {
		setupErr = runLoopback(ctx, o, res, addErrs, progress)
	}
	if setupErr == nil && o.netns && ctx.Err() == nil {
		n, err := runNetns(ctx, o, res, progress)
		totalErrs += n
		setupErr = err
	}
	if setupErr != nil && ctx.Err() == nil {
		// Print what was measured, then fail with the setup error.
		progress("%v", setupErr)
		totalErrs++
		res.Set("setup_error", firstLine(setupErr.Error()))
	}

	res.Set("errors", totalErrs)
	res.Set("elapsed_s", bench.Round(time.Since(started).Seconds(), 3))
	if ctx.Err() != nil {
		res.Set("interrupted", true)
	}
	if o.json {
		if err := res.WriteJSON(c.App.Writer); err != nil {
			return err
		}
	}
	if o.kv {
		if err := res.WriteKV(c.App.Writer); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return cli.Exit("interrupted", 130)
	}
	if setupErr != nil {
		return cli.Exit("bench: "+firstLine(setupErr.Error())+" (details above)", 1)
	}
	if totalErrs > 0 {
		return cli.Exit(fmt.Sprintf("bench: %d errors (see above)", totalErrs), 1)
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// runLoopback measures throughput, latency and connection rate through a
// pair of nodes on loopback, each next to its direct baseline.
func runLoopback(ctx context.Context, o benchOpts, res *bench.Results,
	addErrs func(string, int, error), progress func(string, ...any)) error {
	started := time.Now()
	sink, err := bench.ListenSink("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer sink.Close()
	ech, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ech.Close()

	progress("starting 2 meshd nodes on 127.0.0.1 (exporter in site a, importer in site b)")
	m, err := startBenchMesh(ctx, sink.Addr(), ech.Addr(), o.verbose, progress)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return err
	}
	progress("mesh up in %v: import sink %s -> %s, import echo %s -> %s", time.Since(started).Round(time.Millisecond),
		m.sinkImport, sink.Addr(), m.echoImport, ech.Addr())
	half := o.duration / 2
	if o.only["throughput"] {
		for _, streams := range []int{1, 8} {
			if ctx.Err() != nil {
				break
			}
			k := fmt.Sprintf("throughput_%d", streams)
			d := bench.Throughput(ctx, sink.Addr(), streams, o.duration)
			progress("throughput %d stream(s) direct: %.1f MB/s", streams, d.MBps)
			t := bench.Throughput(ctx, m.sinkImport, streams, o.duration)
			progress("throughput %d stream(s) meshd:  %.1f MB/s (ratio %.3f)", streams, t.MBps, bench.Ratio(t.MBps, d.MBps))
			res.SetPair(k+"_mbps", t.MBps, d.MBps)
			addErrs(k+"_errors", t.Errors, t.FirstErr)
			addErrs(k+"_direct_errors", d.Errors, d.FirstErr)
		}
	}
	if o.only["latency"] {
		for _, conns := range []int{1, 16} {
			if ctx.Err() != nil {
				break
			}
			k := fmt.Sprintf("latency_%d", conns)
			d := bench.Latency(ctx, ech.Addr(), conns, half, 2_000_000)
			progress("latency %d conn(s) direct: p50 %v p99 %v max %v (%d round trips)", conns, d.P50, d.P99, d.Max, d.Count)
			l := bench.Latency(ctx, m.echoImport, conns, half, 2_000_000)
			progress("latency %d conn(s) meshd:  p50 %v p99 %v max %v (%d round trips)", conns, l.P50, l.P99, l.Max, l.Count)
			res.SetPair(k+"_p50_us", bench.Micros(l.P50), bench.Micros(d.P50))
			res.SetPair(k+"_p99_us", bench.Micros(l.P99), bench.Micros(d.P99))
			res.SetPair(k+"_max_us", bench.Micros(l.Max), bench.Micros(d.Max))
			res.Set(k+"_count", l.Count)
			res.Set(k+"_direct_count", d.Count)
			addErrs(k+"_errors", l.Errors, l.FirstErr)
			addErrs(k+"_direct_errors", d.Errors, d.FirstErr)
		}
	}
	if o.only["connrate"] && ctx.Err() == nil {
		workers := o.connWorkers
		d := bench.ConnRate(ctx, ech.Addr(), workers, half, 500_000, &bench.Dialer{Spread: true})
		progress("connection rate direct: %.0f/s (%d connections)", d.PerSec, d.Conns)
		r := bench.ConnRate(ctx, m.echoImport, workers, half, 500_000, &bench.Dialer{Spread: true})
		progress("connection rate meshd:  %.0f/s (%d connections, ratio %.3f)", r.PerSec, r.Conns, bench.Ratio(r.PerSec, d.PerSec))
		res.SetPair("conn_rate", r.PerSec, d.PerSec)
		res.Set("conn_rate_workers", workers)
		res.Set("conn_rate_conns", r.Conns)
		res.Set("conn_rate_direct_conns", d.Conns)
		addErrs("conn_rate_errors", r.Errors, r.FirstErr)
		addErrs("conn_rate_direct_errors", d.Errors, d.FirstErr)
	}

	// Both nodes must still be running: a crash mid-run invalidates the figures.
	for _, p := range []*lab.Proc{m.exporter, m.importer} {
		if p.Exited() {
			addErrs("node_exits", 1, fmt.Errorf("node %s exited during the bench:\n%s", p.Name, p.LogTail()))
		}
	}
	return nil
}

type benchMesh struct {
	env                    *lab.Env
	exporter, importer     *lab.Proc
	sinkImport, echoImport string
}

func (m *benchMesh) close() {
	for _, p := range []*lab.Proc{m.importer, m.exporter} {
		if p != nil {
			p.Stop()
		}
	}
	m.env.Close()
}

// startBenchMesh writes configs for an exporter (site a: sink, echo) and an
// importer (site b), starts both as child processes and waits until the
// importer's imports work. The returned mesh (non-nil whenever anything
// was created) must be closed, also on error.
func startBenchMesh(ctx context.Context, sinkAddr, echoAddr string, verbose bool, progress func(string, ...any)) (*benchMesh, error) {
	env, err := lab.NewEnv("", "meshd-bench-", verbose)
	if err != nil {
		return nil, err
	}
	m := &benchMesh{env: env}
	ports, err := lab.FreePorts(6)
	if err != nil {
		return m, err
	}
	m.sinkImport, m.echoImport = lab.Loopback(ports[4]), lab.Loopback(ports[5])
	exp := env.Node("bench-exporter", "a")
	exp.GossipBind, exp.TunnelListen = lab.Loopback(ports[0]), lab.Loopback(ports[1])
	exp.Exports = []lab.Export{{Name: "sink", Target: sinkAddr}, {Name: "echo", Target: echoAddr}}
	imp := env.Node("bench-importer", "b")
	imp.GossipBind, imp.TunnelListen = lab.Loopback(ports[2]), lab.Loopback(ports[3])
	imp.Join = []string{exp.GossipBind}
	imp.Imports = []lab.Import{{Name: "sink", Listen: m.sinkImport, Sites: []string{"a"}}, {Name: "echo", Listen: m.echoImport, Sites: []string{"a"}}}
	if m.exporter, err = env.Start(exp); err != nil {
		return m, err
	}
	if m.importer, err = env.Start(imp); err != nil {
		return m, err
	}
	want := lab.Want{Peers: []string{"bench-exporter"}, Services: []string{"sink", "echo"}, Endpoints: 1, Imports: 2}
	err = lab.WaitReady(ctx, 30*time.Second, m.importer, []*lab.Proc{m.exporter}, want,
		func(ctx context.Context) error { return lab.EchoPing(ctx, m.echoImport) })
	return m, err
}
