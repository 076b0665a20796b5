package main

// meshd bench --netns: the same throughput, latency and connection-rate
// figures measured between two network namespaces joined by a veth pair,
// for four paths in the same run:
//
//	direct        client (ns b) ── veth ──▶ sink/echo (ns a)
//	wireguard     client (ns b) ── plain wireguard-go, kernel TUN ──▶ sink/echo (ns a)
//	meshd         client ─▶ import (ns b) ── meshd userspace ──▶ exporter (ns a) ─▶ sink/echo
//	meshd_kernel  the same with tunnel.mode: kernel
//
// Every process is this binary: bench-worker for the clients (ns b) and
// the servers (ns a), bench-wgref for wireguard-go, join for the nodes.
// Only the private addresses below, inside the namespaces created here,
// carry traffic. Everything is removed on the way out, also on errors and
// Ctrl-C; namespaces left by a killed earlier run are removed at start.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/internal/netns"
)

// Addresses and ports of the namespace lab. ns a holds the servers and the
// exporters, ns b the clients and the importers.
const (
	netnsVethA    = "10.213.0.2" // veth in ns a
	netnsVethB    = "10.213.0.1" // veth in ns b
	netnsWGA      = "10.214.0.2" // wireguard-go tunnel address in ns a
	netnsWGB      = "10.214.0.1" // and in ns b
	netnsWGPort   = 51900
	netnsWGDev    = "mbwg0"
	netnsSinkPort = 5001
	netnsEchoPort = 5002
)

// benchNetnsPrefix starts the names of the bench's namespaces:
// mb-<pid>-a and mb-<pid>-b.
const benchNetnsPrefix = "mb-"

var staleBenchNetns = regexp.MustCompile(`^mb-([0-9]+)-(a|b)$`)

// netnsVariants in measurement order, with their key infix.
var netnsVariants = []struct{ name, infix string }{
	{"direct", "_direct"},
	{"wireguard", "_wireguard"},
	{"meshd", ""},
	{"meshd_kernel", "_kernel"},
}

// netnsPossible says why the netns bench cannot run here ("" if it can).
func netnsPossible() string {
	if os.Geteuid() != 0 {
		return "--netns needs root (network namespaces, veth, TUN devices); run it as root or drop --netns"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "--netns needs the ip command (iproute2): " + err.Error()
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "--netns needs /dev/net/tun for the kernel-TUN reference and meshd kernel mode: " + err.Error()
	}
	return ""
}

// netnsLab is the namespaces and every process of the netns bench.
type netnsLab struct {
	nsA, nsB   string
	env        *lab.Env // the nodes' configs, keys and logs
	exe        string
	verbose    bool
	progress   func(string, ...any)
	namespaces []string // created, deleted by close
	workers    []*bench.Worker
	wgrefs     []*wgrefProc
	nodes      []*lab.Proc
	client     *bench.Worker // in ns b
	targets    map[string]netnsTarget
}

// netnsTarget is where the client dials for one variant.
type netnsTarget struct{ sink, echo string }

// runCmd runs a command (ip, sysctl), bounded by 15s; the error has its
// output.
func runCmd(ctx context.Context, name string, args ...string) error {
	_, err := netns.Run(ctx, name, args...)
	return err
}

// close stops every process and deletes the namespaces (with their veth
// and TUN devices) and the temporary directory. Safe on a partial lab.
func (l *netnsLab) close() {
	for i := len(l.nodes) - 1; i >= 0; i-- {
		l.nodes[i].Stop()
	}
	for _, w := range l.workers {
		if err := w.Close(); err != nil {
			l.progress("netns: %v", err)
		}
	}
	for _, w := range l.wgrefs {
		w.close()
	}
	// Background context: cleanup must run also after Ctrl-C.
	bg := context.Background()
	for _, ns := range l.namespaces {
		if _, err := netns.Delete(bg, ns); err != nil {
			l.progress("netns cleanup: %v", err)
		}
	}
	l.env.Close()
}

func (l *netnsLab) inNS(ns string, argv ...string) []string { return netns.Exec(ns, argv...) }

// setup creates the namespaces and the veth pair, and starts the servers
// (ns a) and the client (ns b).
func (l *netnsLab) setup(ctx context.Context) error {
	for _, ns := range netns.RemoveStale(ctx, staleBenchNetns) {
		l.progress("netns: removed stale namespace %s of a dead earlier run", ns)
	}
	for _, ns := range []string{l.nsA, l.nsB} {
		if err := netns.Add(ctx, ns); err != nil {
			return fmt.Errorf("netns: %w", err)
		}
		l.namespaces = append(l.namespaces, ns)
	}
	if err := runCmd(ctx, "ip", "-n", l.nsB, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", l.nsA); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	for ns, ip := range map[string]string{l.nsA: netnsVethA, l.nsB: netnsVethB} {
		for _, args := range [][]string{
			{"-n", ns, "addr", "add", ip + "/24", "dev", "veth0"},
			{"-n", ns, "link", "set", "veth0", "up"},
		} {
			if err := runCmd(ctx, "ip", args...); err != nil {
				return fmt.Errorf("netns: %w", err)
			}
		}
		// Namespaced sysctls, ours only: reuse TIME_WAIT ports for new
		// outgoing connections and widen the ephemeral range, so the
		// connection-rate runs (no source-address spread here) do not
		// run out of ports.
		for _, kv := range []string{"net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"} {
			if err := runCmd(ctx, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", kv); err != nil {
				l.progress("netns: %v (continuing)", err)
			}
		}
	}

	srv, err := bench.StartWorker("servers@"+l.nsA, l.inNS(l.nsA, l.exe, "bench-worker"), l.logTo())
	if err != nil {
		return err
	}
	l.workers = append(l.workers, srv)
	if _, err := srv.Call(ctx, bench.WorkerRequest{Op: bench.OpServe,
		Sink: fmt.Sprintf("0.0.0.0:%d", netnsSinkPort), Echo: fmt.Sprintf("0.0.0.0:%d", netnsEchoPort)}, 15*time.Second); err != nil {
		return err
	}
	if l.client, err = bench.StartWorker("client@"+l.nsB, l.inNS(l.nsB, l.exe, "bench-worker"), l.logTo()); err != nil {
		return err
	}
	l.workers = append(l.workers, l.client)
	l.targets = map[string]netnsTarget{"direct": {
		sink: fmt.Sprintf("%s:%d", netnsVethA, netnsSinkPort),
		echo: fmt.Sprintf("%s:%d", netnsVethA, netnsEchoPort),
	}}
	return l.ping(ctx, "direct", 10*time.Second)
}

func (l *netnsLab) logTo() io.Writer {
	if l.verbose {
		return os.Stderr
	}
	return nil
}

// ping proves the echo of variant v answers from the client, retrying
// for up to d (a tunnel's first handshake, a node still starting).
func (l *netnsLab) ping(ctx context.Context, v string, d time.Duration) error {
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

// wgrefProc is one bench-wgref process.
type wgrefProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

func (w *wgrefProc) close() {
	w.stdin.Close() // it closes its device and exits
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		w.cmd.Process.Kill()
		<-w.done
	}
}

// startWireGuard runs plain wireguard-go on a kernel TUN device in each
// namespace, peered over the veth, and waits for both to be configured.
func (l *netnsLab) startWireGuard(ctx context.Context) error {
	privA, err := key.NewPrivate()
	if err != nil {
		return err
	}
	privB, err := key.NewPrivate()
	if err != nil {
		return err
	}
	ends := []struct {
		ns             string
		priv           key.PrivateKey
		peer           key.PublicKey
		peerVeth, addr string
		allowed        string
	}{
		{l.nsA, privA, privB.Public(), netnsVethB, netnsWGA, netnsWGB},
		{l.nsB, privB, privA.Public(), netnsVethA, netnsWGB, netnsWGA},
	}
	for _, e := range ends {
		// Throwaway keys of a private namespace: the command line is fine.
		argv := l.inNS(e.ns, l.exe, "bench-wgref", "--dev", netnsWGDev, "--private", e.priv.String(),
			"--port", strconv.Itoa(netnsWGPort), "--peer", e.peer.String(),
			"--endpoint", fmt.Sprintf("%s:%d", e.peerVeth, netnsWGPort),
			"--addr", e.addr+"/24", "--allowed", e.allowed+"/32")
		w := &wgrefProc{cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
		w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		errPipe := bench.NewTail(4000)
		w.cmd.Stderr = errPipe
		if w.stdin, err = w.cmd.StdinPipe(); err != nil {
			return err
		}
		stdout, err := w.cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := w.cmd.Start(); err != nil {
			return fmt.Errorf("start bench-wgref in %s: %w", e.ns, err)
		}
		ready := make(chan bool, 1)
		go func() { // owned: ends when the process's stdout closes
			sc := bufio.NewScanner(stdout)
			ok := sc.Scan() && sc.Text() == "ready"
			ready <- ok
			io.Copy(io.Discard, stdout)
			w.cmd.Wait()
			close(w.done)
		}()
		l.wgrefs = append(l.wgrefs, w)
		select {
		case ok := <-ready:
			if !ok {
				<-w.done
				return fmt.Errorf("bench-wgref in %s failed: %s", e.ns, errPipe.String())
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(15 * time.Second):
			return fmt.Errorf("bench-wgref in %s: not ready within 15s: %s", e.ns, errPipe.String())
		}
	}
	l.targets["wireguard"] = netnsTarget{
		sink: fmt.Sprintf("%s:%d", netnsWGA, netnsSinkPort),
		echo: fmt.Sprintf("%s:%d", netnsWGA, netnsEchoPort),
	}
	return l.ping(ctx, "wireguard", 15*time.Second)
}

// startMeshd starts an exporter (ns a: sink, echo on ns a's loopback) and
// an importer (ns b, imports on its loopback) in tunnel mode mode, with
// their own cluster key and ports, and waits until the imports work.
func (l *netnsLab) startMeshd(ctx context.Context, variant, mode string, portBase int) error {
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
	exp := node(variant+"-exporter", "a", netnsVethA)
	exp.Exports = []lab.Export{{Name: "sink", Target: fmt.Sprintf("127.0.0.1:%d", netnsSinkPort)},
		{Name: "echo", Target: fmt.Sprintf("127.0.0.1:%d", netnsEchoPort)}}
	imp := node(variant+"-importer", "b", netnsVethB)
	imp.Join = []string{exp.GossipBind}
	imp.Imports = []lab.Import{{Name: "sink", Listen: sinkImport, Sites: []string{"a"}}, {Name: "echo", Listen: echoImport, Sites: []string{"a"}}}
	expP, err := l.env.Start(exp, "ip", "netns", "exec", l.nsA)
	if err != nil {
		return err
	}
	l.nodes = append(l.nodes, expP)
	impP, err := l.env.Start(imp, "ip", "netns", "exec", l.nsB)
	if err != nil {
		return err
	}
	l.nodes = append(l.nodes, impP)
	l.targets[variant] = netnsTarget{sink: sinkImport, echo: echoImport}
	want := lab.Want{Peers: []string{exp.Name}, Services: []string{"sink", "echo"}, Endpoints: 1, Imports: 2}
	return lab.WaitReady(ctx, 30*time.Second, impP, []*lab.Proc{expP}, want,
		func(ctx context.Context) error { return l.ping(ctx, variant, 0) })
}

// runNetns builds the lab, measures every selected figure for the four
// variants in turn and records them under netns_* keys. It returns the
// number of measurement errors; a setup failure is an error.
func runNetns(ctx context.Context, o benchOpts, res *bench.Results, progress func(string, ...any)) (errs int, err error) {
	env, err := lab.NewEnv("", "meshd-bench-netns-", o.verbose)
	if err != nil {
		return 0, err
	}
	l := &netnsLab{nsA: fmt.Sprintf("%s%d-a", benchNetnsPrefix, os.Getpid()), nsB: fmt.Sprintf("%s%d-b", benchNetnsPrefix, os.Getpid()),
		env: env, exe: env.Exe, verbose: o.verbose, progress: progress}
	defer l.close()
	t0 := time.Now()
	progress("netns: namespaces %s (servers, exporters) and %s (clients, importers), veth %s <-> %s", l.nsA, l.nsB, netnsVethA, netnsVethB)
	if err := l.setup(ctx); err != nil {
		return 0, err
	}
	if err := l.startWireGuard(ctx); err != nil {
		return 0, err
	}
	if err := l.startMeshd(ctx, "meshd", "userspace", 7946); err != nil {
		return 0, fmt.Errorf("netns meshd userspace: %w", err)
	}
	if err := l.startMeshd(ctx, "meshd_kernel", "kernel", 7956); err != nil {
		return 0, fmt.Errorf("netns meshd kernel: %w", err)
	}
	progress("netns: direct, wireguard-go (kernel TUN %s %s<->%s), meshd userspace and kernel up in %v", netnsWGDev, netnsWGB, netnsWGA,
		time.Since(t0).Round(time.Millisecond))
	if o.netnsLoss > 0 {
		// Random loss on every UDP packet leaving either namespace (the
		// tunnels; direct is TCP and stays clean). A GSO batch is one
		// packet to the rule, so it is dropped whole, as a NIC queue
		// overflow would.
		p := strconv.FormatFloat(o.netnsLoss/100, 'f', -1, 64)
		for _, ns := range []string{l.nsA, l.nsB} {
			if err := runCmd(ctx, "ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-p", "udp",
				"-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"); err != nil {
				return 0, fmt.Errorf("netns loss: %w", err)
			}
		}
		res.Set("netns_udp_loss_pct", o.netnsLoss)
		progress("netns: dropping %v%% of UDP packets leaving each namespace", o.netnsLoss)
	}

	half := o.duration / 2
	timeout := o.duration + 60*time.Second
	call := func(req bench.WorkerRequest) (bench.WorkerResponse, error) {
		return l.client.Call(ctx, req, timeout)
	}
	countErr := func(key string, n int, first string) {
		if n == 0 {
			return
		}
		errs += n
		res.Set(key, n)
		progress("%s: %d errors, first: %s", key, n, first)
	}
	if o.only["throughput"] {
		for _, streams := range []int{1, 8} {
			vals := map[string]float64{}
			for _, v := range netnsVariants {
				r, err := call(bench.WorkerRequest{Op: bench.OpThroughput, Addr: l.targets[v.name].sink, Streams: streams, Duration: int64(o.duration)})
				if err != nil {
					return errs, err
				}
				vals[v.name] = r.MBps
				progress("netns throughput %d stream(s) %-12s %8.1f MB/s", streams, v.name+":", r.MBps)
				countErr(fmt.Sprintf("netns_throughput_%d%s_errors", streams, v.infix), r.Errors, r.FirstErr)
			}
			setNetns(res, fmt.Sprintf("netns_throughput_%d", streams), "_mbps", vals)
		}
	}
	if o.only["latency"] {
		for _, conns := range []int{1, 16} {
			p50, p99, max := map[string]float64{}, map[string]float64{}, map[string]float64{}
			for _, v := range netnsVariants {
				r, err := call(bench.WorkerRequest{Op: bench.OpLatency, Addr: l.targets[v.name].echo, Conns: conns, Duration: int64(half), Max: 2_000_000})
				if err != nil {
					return errs, err
				}
				lr := r.Latency()
				p50[v.name], p99[v.name], max[v.name] = bench.Micros(lr.P50), bench.Micros(lr.P99), bench.Micros(lr.Max)
				progress("netns latency %d conn(s) %-12s p50 %v p99 %v max %v (%d round trips)", conns, v.name+":", lr.P50, lr.P99, lr.Max, lr.Count)
				countErr(fmt.Sprintf("netns_latency_%d%s_errors", conns, v.infix), r.Errors, r.FirstErr)
			}
			k := fmt.Sprintf("netns_latency_%d", conns)
			setNetns(res, k+"_p50", "_us", p50)
			setNetns(res, k+"_p99", "_us", p99)
			setNetns(res, k+"_max", "_us", max)
		}
	}
	if o.only["connrate"] {
		workers := o.connWorkers
		vals := map[string]float64{}
		for _, v := range netnsVariants {
			r, err := call(bench.WorkerRequest{Op: bench.OpConnRate, Addr: l.targets[v.name].echo, Conns: workers, Duration: int64(half), Max: 500_000})
			if err != nil {
				return errs, err
			}
			vals[v.name] = r.PerSec
			progress("netns connection rate %-12s %6.0f/s (%d connections)", v.name+":", r.PerSec, r.Conns)
			countErr("netns_conn_rate"+v.infix+"_errors", r.Errors, r.FirstErr)
		}
		setNetns(res, "netns_conn_rate", "", vals)
	}
	for _, p := range l.nodes {
		if p.Exited() {
			errs++
			progress("netns: node %s exited during the bench:\n%s", p.Name, p.LogTail())
		}
	}
	res.Set("netns_errors", errs)
	return errs, nil
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
