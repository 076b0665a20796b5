package benchrun

// The netns measurement: throughput, latency and connection rate between
// two network namespaces joined by a veth pair (lab.Netns), for four
// paths in the same run:
//
//	direct        client (ns b) ── veth ──▶ sink/echo (ns a)
//	wireguard     client (ns b) ── plain wireguard-go, kernel TUN ──▶ sink/echo (ns a)
//	meshd         client ─▶ import (ns b) ── meshd userspace ──▶ exporter (ns a) ─▶ sink/echo
//	meshd_kernel  the same with tunnel.mode: kernel
//
// Every process is the meshd binary: bench-worker for the clients (ns b)
// and the servers (ns a), bench-wgref for wireguard-go, join for the
// nodes. Everything is removed on the way out, also on errors and Ctrl-C.

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/lab"
)

// Ports of the servers in ns a.
const (
	netnsSinkPort = 5001
	netnsEchoPort = 5002
)

// netnsPrefix starts the names of the bench's namespaces: mb-<pid>-a and
// mb-<pid>-b.
const netnsPrefix = "mb-"

// netnsVariants in measurement order, with their key infix.
var netnsVariants = []struct{ name, infix string }{
	{"direct", "_direct"},
	{"wireguard", "_wireguard"},
	{"meshd", ""},
	{"meshd_kernel", "_kernel"},
}

// netnsBench is the lab and every process of the netns measurement.
type netnsBench struct {
	env      *lab.Env // the nodes' configs, keys and logs
	ns       *lab.Netns
	verbose  bool
	progress func(string, ...any)
	workers  []*bench.Worker
	nodes    []*lab.Proc
	client   *bench.Worker // in ns b
	targets  map[string]netnsTarget
}

// netnsTarget is where the client dials for one variant.
type netnsTarget struct{ sink, echo string }

// close stops every process and removes the namespaces and the
// temporary directory. Safe on a partial setup.
func (l *netnsBench) close() {
	for i := len(l.nodes) - 1; i >= 0; i-- {
		l.nodes[i].Stop()
	}
	for _, w := range l.workers {
		if err := w.Close(); err != nil {
			l.progress("netns: %v", err)
		}
	}
	if l.ns != nil {
		l.ns.Close()
	}
	l.env.Close()
}

func (l *netnsBench) logTo() io.Writer {
	if l.verbose {
		return os.Stderr
	}
	return nil
}

// setup makes the namespaces and starts the servers (ns a) and the client
// (ns b).
func (l *netnsBench) setup(ctx context.Context) error {
	var err error
	if l.ns, err = lab.NewNetns(ctx, netnsPrefix, l.progress); err != nil {
		return err
	}
	srv, err := bench.StartWorker("servers@"+l.ns.A, l.ns.Exec(l.ns.A, l.env.Exe, "bench-worker"), l.logTo())
	if err != nil {
		return err
	}
	l.workers = append(l.workers, srv)
	if _, err := srv.Call(ctx, bench.WorkerRequest{Op: bench.OpServe,
		Sink: fmt.Sprintf("0.0.0.0:%d", netnsSinkPort), Echo: fmt.Sprintf("0.0.0.0:%d", netnsEchoPort)}, 15*time.Second); err != nil {
		return err
	}
	if l.client, err = bench.StartWorker("client@"+l.ns.B, l.ns.Exec(l.ns.B, l.env.Exe, "bench-worker"), l.logTo()); err != nil {
		return err
	}
	l.workers = append(l.workers, l.client)
	l.targets = map[string]netnsTarget{"direct": targetsAt(lab.VethA)}
	return l.ping(ctx, "direct", 10*time.Second)
}

// targetsAt is the sink and echo of ns a at ip.
func targetsAt(ip string) netnsTarget {
	return netnsTarget{sink: fmt.Sprintf("%s:%d", ip, netnsSinkPort), echo: fmt.Sprintf("%s:%d", ip, netnsEchoPort)}
}

// ping proves the echo of variant v answers from the client, retrying
// for up to d (a tunnel's first handshake, a node still starting).
func (l *netnsBench) ping(ctx context.Context, v string, d time.Duration) error {
	end := time.Now().Add(d)
	for {
		r, err := l.client.Call(ctx, bench.WorkerRequest{Op: bench.OpPing, Addr: l.targets[v].echo}, 30*time.Second)
		if err != nil {
			return err
		}
		if r.Errors == 0 {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("netns %s: echo %s does not answer within %v: %s", v, l.targets[v].echo, d, r.FirstErr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startWireGuard starts the plain wireguard-go reference and waits until
// the echo answers through it.
func (l *netnsBench) startWireGuard(ctx context.Context) error {
	if err := l.ns.StartWireGuard(ctx, l.env.Exe, false); err != nil {
		return err
	}
	l.targets["wireguard"] = targetsAt(lab.WGA)
	return l.ping(ctx, "wireguard", 15*time.Second)
}

// startMeshd starts an exporter (ns a: sink, echo on ns a's loopback) and
// an importer (ns b, imports on its loopback) in tunnel mode mode, with
// their own cluster key and ports, and waits until the imports work.
func (l *netnsBench) startMeshd(ctx context.Context, variant, mode string, portBase int) error {
	keyFile, err := l.env.NewKey(variant)
	if err != nil {
		return err
	}
	sinkImport := fmt.Sprintf("127.0.0.1:%d", portBase+2)
	echoImport := fmt.Sprintf("127.0.0.1:%d", portBase+3)
	node := func(name, site, ip string) lab.Node {
		n := l.env.Node(name, site)
		n.KeyFile, n.TunnelMode = keyFile, mode
		n.GossipBind, n.TunnelListen = fmt.Sprintf("%s:%d", ip, portBase), fmt.Sprintf("%s:%d", ip, portBase+1)
		return n
	}
	exp := node(variant+"-exporter", "a", lab.VethA)
	exp.Exports = []lab.Export{{Name: "sink", Target: fmt.Sprintf("127.0.0.1:%d", netnsSinkPort)},
		{Name: "echo", Target: fmt.Sprintf("127.0.0.1:%d", netnsEchoPort)}}
	imp := node(variant+"-importer", "b", lab.VethB)
	imp.Join = []string{exp.GossipBind}
	imp.Imports = []lab.Import{{Name: "sink", Listen: sinkImport, Sites: []string{"a"}}, {Name: "echo", Listen: echoImport, Sites: []string{"a"}}}
	expP, err := l.env.Start(exp, l.ns.Exec(l.ns.A)...)
	if err != nil {
		return err
	}
	l.nodes = append(l.nodes, expP)
	impP, err := l.env.Start(imp, l.ns.Exec(l.ns.B)...)
	if err != nil {
		return err
	}
	l.nodes = append(l.nodes, impP)
	l.targets[variant] = netnsTarget{sink: sinkImport, echo: echoImport}
	want := lab.Want{Peers: []string{exp.Name}, Services: []string{"sink", "echo"}, Endpoints: 1, Imports: 2}
	return lab.WaitReady(ctx, 30*time.Second, impP, []*lab.Proc{expP}, want,
		func(ctx context.Context) error { return l.ping(ctx, variant, 0) })
}

// start brings up all four paths, and the packet loss if asked for.
func (l *netnsBench) start(ctx context.Context, r *run) error {
	t0 := time.Now()
	if err := l.setup(ctx); err != nil {
		return err
	}
	r.progress("netns: namespaces %s (servers, exporters) and %s (clients, importers), veth %s <-> %s", l.ns.A, l.ns.B, lab.VethA, lab.VethB)
	if err := l.startWireGuard(ctx); err != nil {
		return err
	}
	if err := l.startMeshd(ctx, "meshd", "userspace", 7946); err != nil {
		return fmt.Errorf("netns meshd userspace: %w", err)
	}
	if err := l.startMeshd(ctx, "meshd_kernel", "kernel", 7956); err != nil {
		return fmt.Errorf("netns meshd kernel: %w", err)
	}
	r.progress("netns: direct, wireguard-go (kernel TUN %s %s<->%s), meshd userspace and kernel up in %v", lab.WGDev, lab.WGB, lab.WGA,
		time.Since(t0).Round(time.Millisecond))
	if r.o.NetnsLoss > 0 {
		if err := l.ns.DropUDP(ctx, r.o.NetnsLoss); err != nil {
			return err
		}
		r.res.Set("netns_udp_loss_pct", r.o.NetnsLoss)
		r.progress("netns: dropping %v%% of UDP packets leaving each namespace", r.o.NetnsLoss)
	}
	return nil
}

// netns builds the lab, measures every selected figure for the four
// variants in turn and records them under netns_* keys, with their
// error count in netns_errors. A setup failure is returned.
func (r *run) netns(ctx context.Context) error {
	env, err := lab.NewEnv("", "meshd-bench-netns-", r.o.Verbose)
	if err != nil {
		return err
	}
	l := &netnsBench{env: env, verbose: r.o.Verbose, progress: r.progress}
	defer l.close()
	if err := l.start(ctx, r); err != nil {
		return err
	}
	errs := 0
	countErr := func(key string, n int, first string) {
		if n > 0 {
			errs += n
			r.res.Set(key, n)
			r.progress("%s: %d errors, first: %s", key, n, first)
		}
	}
	err = l.measure(ctx, r, countErr)
	for _, p := range l.nodes {
		if p.Exited() {
			errs++
			r.progress("netns: %v", exitedErr(p.Name, p.LogTail()))
		}
	}
	r.errs += errs
	if err != nil {
		return err
	}
	r.res.Set("netns_errors", errs)
	return nil
}

// measure runs the selected figures over the four variants.
func (l *netnsBench) measure(ctx context.Context, r *run, countErr func(string, int, string)) error {
	o := r.o
	timeout := o.Duration + 60*time.Second
	call := func(req bench.WorkerRequest) (bench.WorkerResponse, error) { return l.client.Call(ctx, req, timeout) }
	if o.Only["throughput"] {
		for _, streams := range []int{1, 8} {
			vals := map[string]float64{}
			for _, v := range netnsVariants {
				resp, err := call(bench.WorkerRequest{Op: bench.OpThroughput, Addr: l.targets[v.name].sink, Streams: streams, Duration: int64(o.Duration)})
				if err != nil {
					return err
				}
				vals[v.name] = resp.MBps
				r.progress("netns throughput %d stream(s) %-12s %8.1f MB/s", streams, v.name+":", resp.MBps)
				countErr(fmt.Sprintf("netns_throughput_%d%s_errors", streams, v.infix), resp.Errors, resp.FirstErr)
			}
			setNetns(r.res, fmt.Sprintf("netns_throughput_%d", streams), "_mbps", vals)
		}
	}
	if o.Only["latency"] {
		for _, conns := range []int{1, 16} {
			p50, p99, mx := map[string]float64{}, map[string]float64{}, map[string]float64{}
			for _, v := range netnsVariants {
				resp, err := call(bench.WorkerRequest{Op: bench.OpLatency, Addr: l.targets[v.name].echo, Conns: conns, Duration: int64(o.Duration / 2), Max: 2_000_000})
				if err != nil {
					return err
				}
				lr := resp.Latency()
				p50[v.name], p99[v.name], mx[v.name] = bench.Micros(lr.P50), bench.Micros(lr.P99), bench.Micros(lr.Max)
				r.progress("netns latency %d conn(s) %-12s p50 %v p99 %v max %v (%d round trips)", conns, v.name+":", lr.P50, lr.P99, lr.Max, lr.Count)
				countErr(fmt.Sprintf("netns_latency_%d%s_errors", conns, v.infix), resp.Errors, resp.FirstErr)
			}
			k := fmt.Sprintf("netns_latency_%d", conns)
			setNetns(r.res, k+"_p50", "_us", p50)
			setNetns(r.res, k+"_p99", "_us", p99)
			setNetns(r.res, k+"_max", "_us", mx)
		}
	}
	if o.Only["connrate"] {
		vals := map[string]float64{}
		for _, v := range netnsVariants {
			resp, err := call(bench.WorkerRequest{Op: bench.OpConnRate, Addr: l.targets[v.name].echo, Conns: o.ConnWorkers, Duration: int64(o.Duration / 2), Max: 500_000})
			if err != nil {
				return err
			}
			vals[v.name] = resp.PerSec
			r.progress("netns connection rate %-12s %6.0f/s (%d connections)", v.name+":", resp.PerSec, resp.Conns)
			countErr("netns_conn_rate"+v.infix+"_errors", resp.Errors, resp.FirstErr)
		}
		setNetns(r.res, "netns_conn_rate", "", vals)
	}
	return nil
}

// setNetns records one figure of the four variants and its ratios:
// base+unit (meshd userspace), base_kernel+unit, base_wireguard+unit,
// base_direct+unit; base_vs_wireguard and base_kernel_vs_wireguard
// (meshd / wireguard-go); base_ratio, base_kernel_ratio and
// base_wireguard_ratio (x / direct).
func setNetns(res *bench.Results, base, unit string, v map[string]float64) {
	res.Set(base+unit, bench.Round(v["meshd"], 3))
	res.Set(base+"_kernel"+unit, bench.Round(v["meshd_kernel"], 3))
	res.Set(base+"_wireguard"+unit, bench.Round(v["wireguard"], 3))
	res.Set(base+"_direct"+unit, bench.Round(v["direct"], 3))
	res.Set(base+"_vs_wireguard", bench.Round(bench.Ratio(v["meshd"], v["wireguard"]), 4))
	res.Set(base+"_kernel_vs_wireguard", bench.Round(bench.Ratio(v["meshd_kernel"], v["wireguard"]), 4))
	res.Set(base+"_ratio", bench.Round(bench.Ratio(v["meshd"], v["direct"]), 4))
	res.Set(base+"_kernel_ratio", bench.Round(bench.Ratio(v["meshd_kernel"], v["direct"]), 4))
	res.Set(base+"_wireguard_ratio", bench.Round(bench.Ratio(v["wireguard"], v["direct"]), 4))
}
