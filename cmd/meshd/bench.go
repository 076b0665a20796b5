package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/node"
)

var benchMeasurements = []string{"throughput", "latency", "connrate", "idle"}

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "start two meshd nodes on loopback and measure them against direct TCP; print machine-readable results",
		UsageText: "meshd bench [--duration 10s] [--idle 2000] [--idle-hold 10s] [--only throughput,latency,connrate,idle] [--format json|kv|both] [--quick]",
		Description: "Starts two `meshd join` processes (this binary) on 127.0.0.1 with generated configs\n" +
			"in a temporary directory: an exporter in site a exporting `sink` and `echo` (both\n" +
			"served by the bench process) and an importer in site b importing them. Every\n" +
			"figure is measured through the import and, in the same run right before it,\n" +
			"directly against the target (key _direct), with the ratio meshd/direct (key\n" +
			"_ratio): the machine may be shared and noisy, the ratio is the comparable figure.\n" +
			"\n" +
			"  throughput  1 and 8 parallel streams into a discarding sink for --duration;\n" +
			"              MB/s = 10^6 bytes/s acknowledged by the sink (keys throughput_N_mbps)\n" +
			"  latency     64-byte echo round trips over 1 and 16 connections for --duration/2;\n" +
			"              p50/p99/max in microseconds\n" +
			"  connrate    4 workers: connect, one 64-byte round trip, close, for --duration/2\n" +
			"  idle        --idle connections through the import, each verified by a round trip,\n" +
			"              held --idle-hold, verified again; RSS growth per connection of both nodes\n" +
			"\n" +
			"Idle connections run first so the RSS figures are not inflated by the throughput runs.\n" +
			"The bench raises RLIMIT_NOFILE to the hard limit and binds client sockets to\n" +
			"127.0.0.2-254 in turn so loopback ports do not run out. The issue's targets\n" +
			"(18,000 idle connections per node pair; 100,000 over 6+6 nodes) need a hard\n" +
			"RLIMIT_NOFILE of at least 2×N+1000 for this process (it holds both ends of every\n" +
			"direct-to-echo leg and every client socket): raise it (ulimit -Hn, limits.conf,\n" +
			"LimitNOFILE=) before running with a large --idle.\n" +
			"\n" +
			"Results go to stdout (one JSON object, or key=value lines); progress to stderr.\n" +
			"Exits 1 if any measurement had errors (the results are still printed).",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "length of each throughput run (latency and connrate runs take half)"},
			&cli.IntFlag{Name: "idle", Value: 2000, Usage: "idle connections to hold through the import"},
			&cli.DurationFlag{Name: "idle-hold", Value: 10 * time.Second, Usage: "how long to hold the idle connections before verifying them again"},
			&cli.StringFlag{Name: "only", Value: strings.Join(benchMeasurements, ","), Usage: "comma-separated measurements to run"},
			&cli.StringFlag{Name: "format", Value: "json", Usage: "output: json, kv (key=value lines) or both"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object (the default)"},
			&cli.BoolFlag{Name: "quick", Usage: "smoke test: 300ms runs, 100 idle connections held 500ms (explicit flags win)"},
			&cli.BoolFlag{Name: "verbose", Usage: "show the nodes' logs on stderr"},
		},
		Action: runBench,
	}
}

type benchOpts struct {
	duration, idleHold time.Duration
	idle               int
	only               map[string]bool
	json, kv           bool
	verbose            bool
}

func parseBenchOpts(c *cli.Context) (benchOpts, error) {
	o := benchOpts{duration: c.Duration("duration"), idle: c.Int("idle"), idleHold: c.Duration("idle-hold"),
		only: map[string]bool{}, verbose: c.Bool("verbose")}
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
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
	started := time.Now()

	nofile, err := bench.RaiseNoFile()
	if err != nil {
		progress("cannot raise RLIMIT_NOFILE: %v", err)
	}
	if o.only["idle"] && nofile > 0 && uint64(2*o.idle+1000) > nofile {
		return fmt.Errorf("--idle %d needs RLIMIT_NOFILE >= %d, the hard limit is %d: raise it (ulimit -Hn, LimitNOFILE=) or lower --idle",
			o.idle, 2*o.idle+1000, nofile)
	}

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

	res := bench.NewResults()
	res.Set("date", started.UTC().Format(time.RFC3339))
	res.Set("meshd_version", version)
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
	half := o.duration / 2

	if o.only["idle"] && ctx.Err() == nil {
		runIdle(ctx, o, m, res, addErrs, progress)
	}
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
		const workers = 4
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
	for _, p := range []*benchProc{m.exporter, m.importer} {
		if p.exited() {
			totalErrs++
			progress("node %s exited during the bench:\n%s", p.name, p.logTail())
		}
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
	if totalErrs > 0 {
		return cli.Exit(fmt.Sprintf("bench: %d errors (see above)", totalErrs), 1)
	}
	return nil
}

func runIdle(ctx context.Context, o benchOpts, m *benchMesh, res *bench.Results,
	addErrs func(string, int, error), progress func(string, ...any)) {
	rss := func(p *benchProc) int64 {
		v, err := bench.RSS(p.cmd.Process.Pid)
		if err != nil {
			progress("rss of %s: %v", p.name, err)
		}
		return v
	}
	impBefore, expBefore := rss(m.importer), rss(m.exporter)
	t0 := time.Now()
	set, openErrs, first := bench.OpenIdle(ctx, m.echoImport, o.idle, 64, &bench.Dialer{Spread: true})
	defer set.Close()
	progress("idle: %d/%d connections established and verified in %v", set.Len(), o.idle, time.Since(t0).Round(time.Millisecond))
	res.Set("idle_conns", set.Len())
	res.Set("idle_setup_ms", time.Since(t0).Milliseconds())
	addErrs("idle_open_errors", openErrs, first)
	v1, first := set.Verify(ctx, 64)
	addErrs("idle_verify1_errors", v1, first)
	progress("idle: holding %d connections for %v", set.Len(), o.idleHold)
	select {
	case <-ctx.Done():
	case <-time.After(o.idleHold):
	}
	v2, first := set.Verify(ctx, 64)
	addErrs("idle_verify2_errors", v2, first)
	impAfter, expAfter := rss(m.importer), rss(m.exporter)
	res.Set("idle_hold_s", o.idleHold.Seconds())
	res.Set("idle_rss_importer_before_bytes", impBefore)
	res.Set("idle_rss_importer_after_bytes", impAfter)
	res.Set("idle_rss_exporter_before_bytes", expBefore)
	res.Set("idle_rss_exporter_after_bytes", expAfter)
	if n := set.Len(); n > 0 {
		res.Set("idle_rss_per_conn_importer_bytes", float64((impAfter-impBefore)/int64(n)))
		res.Set("idle_rss_per_conn_exporter_bytes", float64((expAfter-expBefore)/int64(n)))
		progress("idle: RSS per connection: importer %d B, exporter %d B; errors %d", (impAfter-impBefore)/int64(n),
			(expAfter-expBefore)/int64(n), openErrs+v1+v2)
	}
}

// benchProc is one `meshd join` child process.
type benchProc struct {
	name, sock, logPath string
	cmd                 *exec.Cmd
	done                chan struct{}
	waitErr             error
}

func (p *benchProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the node to leave (SIGTERM) and kills it if it takes longer than 5s.
func (p *benchProc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *benchProc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

type benchMesh struct {
	dir                    string
	exporter, importer     *benchProc
	sinkImport, echoImport string
}

func (m *benchMesh) close() {
	for _, p := range []*benchProc{m.importer, m.exporter} {
		if p != nil {
			p.stop()
		}
	}
	os.RemoveAll(m.dir)
}

// startBenchMesh writes configs for an exporter (site a: sink, echo) and an
// importer (site b), starts both as child processes and waits until the
// importer's imports work. The returned mesh (non-nil whenever anything
// was created) must be closed, also on error.
func startBenchMesh(ctx context.Context, sinkAddr, echoAddr string, verbose bool, progress func(string, ...any)) (*benchMesh, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable: %w", err)
	}
	dir, err := os.MkdirTemp("", "meshd-bench-")
	if err != nil {
		return nil, err
	}
	m := &benchMesh{dir: dir}
	k := make([]byte, 32)
	rand.Read(k)
	keyFile := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		return m, err
	}
	ports, err := freePorts(6)
	if err != nil {
		return m, err
	}
	expGossip := fmt.Sprintf("127.0.0.1:%d", ports[0])
	m.sinkImport = fmt.Sprintf("127.0.0.1:%d", ports[4])
	m.echoImport = fmt.Sprintf("127.0.0.1:%d", ports[5])
	level := "warn"
	if verbose {
		level = "info"
	}
	common := func(name, site string, gossip, tunnel int, join string) string {
		return fmt.Sprintf("name: %s\nsite: %s\ndata_dir: %s\ncluster:\n  key_file: %s\n  join: [%s]\n"+
			"gossip:\n  bind: 127.0.0.1:%d\ntunnel:\n  listen: 127.0.0.1:%d\n"+
			"failover:\n  drain_grace: 1s\ncontrol:\n  socket: %s\nlog:\n  level: %s\n",
			name, site, filepath.Join(dir, name), keyFile, join, gossip, tunnel, filepath.Join(dir, name+".sock"), level)
	}
	expCfg := common("bench-exporter", "a", ports[0], ports[1], "") +
		fmt.Sprintf("exports:\n  - name: sink\n    target: %s\n  - name: echo\n    target: %s\n", sinkAddr, echoAddr)
	impCfg := common("bench-importer", "b", ports[2], ports[3], strconv.Quote(expGossip)) +
		fmt.Sprintf("imports:\n  - name: sink\n    listen: %s\n    sites: [a]\n  - name: echo\n    listen: %s\n    sites: [a]\n",
			m.sinkImport, m.echoImport)

	start := func(name, cfg string) (*benchProc, error) {
		cfgPath := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		p := &benchProc{name: name, sock: filepath.Join(dir, name+".sock"), logPath: filepath.Join(dir, name+".log"),
			done: make(chan struct{})}
		p.cmd = exec.Command(exe, "join", "--config", cfgPath)
		// Own process group: a terminal's Ctrl-C reaches only the bench,
		// which then stops the nodes in order. Pdeathsig kills them if the
		// bench dies without cleaning up.
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if verbose {
			p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
		} else {
			lf, err := os.Create(p.logPath)
			if err != nil {
				return nil, err
			}
			defer lf.Close()
			p.cmd.Stdout, p.cmd.Stderr = lf, lf
		}
		if err := p.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		go func() {
			p.waitErr = p.cmd.Wait()
			close(p.done)
		}()
		return p, nil
	}
	if m.exporter, err = start("bench-exporter", expCfg); err != nil {
		return m, err
	}
	if m.importer, err = start("bench-importer", impCfg); err != nil {
		return m, err
	}

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	for {
		for _, p := range []*benchProc{m.exporter, m.importer} {
			if p.exited() {
				return m, fmt.Errorf("node %s exited (%v):\n%s", p.name, p.waitErr, p.logTail())
			}
		}
		if why := meshNotReady(wctx, m.importer.sock); why == "" {
			// The catalog says yes; prove it with a round trip.
			if err := echoPing(wctx, m.echoImport); err == nil {
				return m, nil
			} else {
				why = "echo through the import: " + err.Error()
			}
			last = why
		} else {
			last = why
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return m, ctx.Err()
			}
			return m, fmt.Errorf("mesh not ready within 30s: %s\nimporter log:\n%s\nexporter log:\n%s",
				last, m.importer.logTail(), m.exporter.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// meshNotReady asks the importer's control socket for its status and says
// what is missing ("" when the exporter is up and both services are healthy).
func meshNotReady(ctx context.Context, sock string) string {
	var st node.Status
	if err := controlGet(ctx, sock, "/status", &st); err != nil {
		return err.Error()
	}
	up := false
	for _, p := range st.Peers {
		if p.Name == "bench-exporter" && p.State == "alive" && p.Up && p.Path == node.PathDirect {
			up = true
		}
	}
	if !up {
		return "exporter not up on the importer"
	}
	healthy := map[string]bool{}
	for _, s := range st.Services {
		for _, e := range s.Endpoints {
			if e.Healthy {
				healthy[s.Name] = true
			}
		}
	}
	if !healthy["sink"] || !healthy["echo"] {
		return "services sink and echo not both healthy in the catalog"
	}
	if len(st.Imports) != 2 {
		return fmt.Sprintf("%d imports, want 2", len(st.Imports))
	}
	return ""
}

func echoPing(ctx context.Context, addr string) error {
	set, n, err := bench.OpenIdle(ctx, addr, 1, 1, nil)
	set.Close()
	if n > 0 {
		if err == nil {
			err = errors.New("failed")
		}
		return err
	}
	return nil
}

// freePorts finds n distinct loopback ports free for both TCP and UDP.
func freePorts(n int) ([]int, error) {
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n && tries < 100*n; tries++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	if len(ports) < n {
		return nil, errors.New("cannot find free loopback ports")
	}
	return ports, nil
}
