package benchrun

import (
	"context"
	"fmt"
	"time"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/internal/lab"
)

// pair is an exporter (site a: sink, echo) and an importer (site b) on
// loopback.
type pair struct {
	env                    *lab.Env
	exporter, importer     *lab.Proc
	sinkImport, echoImport string
}

func (m *pair) close() {
	for _, p := range []*lab.Proc{m.importer, m.exporter} {
		if p != nil {
			p.Stop()
		}
	}
	m.env.Close()
}

// startPair starts the exporter of sinkAddr and echoAddr and the importer
// of both, and waits until a round trip through the importer's echo
// import works. The returned pair (non-nil whenever anything was
// created) must be closed, also on error.
func startPair(ctx context.Context, sinkAddr, echoAddr string, verbose bool) (*pair, error) {
	env, err := lab.NewEnv("", "meshd-bench-", verbose)
	if err != nil {
		return nil, err
	}
	m := &pair{env: env}
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
	want := lab.Want{Peers: []string{exp.Name}, Services: []string{"sink", "echo"}, Endpoints: 1, Imports: 2}
	err = lab.WaitReady(ctx, 30*time.Second, m.importer, []*lab.Proc{m.exporter}, want,
		func(ctx context.Context) error { return lab.EchoPing(ctx, m.echoImport) })
	return m, err
}

// loopback measures throughput, latency and connection rate through a
// pair on loopback, each right after its direct baseline.
func (r *run) loopback(ctx context.Context) error {
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

	r.progress("starting 2 meshd nodes on 127.0.0.1 (exporter in site a, importer in site b)")
	m, err := startPair(ctx, sink.Addr(), ech.Addr(), r.o.Verbose)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return err
	}
	r.progress("mesh up in %v: import sink %s -> %s, import echo %s -> %s", time.Since(started).Round(time.Millisecond),
		m.sinkImport, sink.Addr(), m.echoImport, ech.Addr())
	if r.o.Only["throughput"] {
		r.throughput(ctx, m.sinkImport, sink.Addr())
	}
	if r.o.Only["latency"] {
		r.latency(ctx, m.echoImport, ech.Addr())
	}
	if r.o.Only["connrate"] && ctx.Err() == nil {
		r.connRate(ctx, m.echoImport, ech.Addr())
	}
	// Both nodes must still be running: a crash mid-run invalidates the figures.
	for _, p := range []*lab.Proc{m.exporter, m.importer} {
		if p.Exited() {
			r.addErrs("node_exits", 1, exitedErr(p.Name, p.LogTail()))
		}
	}
	return nil
}

// throughput: 1 and 8 streams into the sink for the full duration.
func (r *run) throughput(ctx context.Context, mesh, direct string) {
	for _, streams := range []int{1, 8} {
		if ctx.Err() != nil {
			return
		}
		k := fmt.Sprintf("throughput_%d", streams)
		d := bench.Throughput(ctx, direct, streams, r.o.Duration)
		r.progress("throughput %d stream(s) direct: %.1f MB/s", streams, d.MBps)
		t := bench.Throughput(ctx, mesh, streams, r.o.Duration)
		r.progress("throughput %d stream(s) meshd:  %.1f MB/s (ratio %.3f)", streams, t.MBps, bench.Ratio(t.MBps, d.MBps))
		r.res.SetPair(k+"_mbps", t.MBps, d.MBps)
		r.addErrs(k+"_errors", t.Errors, t.FirstErr)
		r.addErrs(k+"_direct_errors", d.Errors, d.FirstErr)
	}
}

// latency: 64-byte round trips over 1 and 16 connections for half the
// duration.
func (r *run) latency(ctx context.Context, mesh, direct string) {
	for _, conns := range []int{1, 16} {
		if ctx.Err() != nil {
			return
		}
		k := fmt.Sprintf("latency_%d", conns)
		d := bench.Latency(ctx, direct, conns, r.o.Duration/2, 2_000_000)
		r.progress("latency %d conn(s) direct: p50 %v p99 %v max %v (%d round trips)", conns, d.P50, d.P99, d.Max, d.Count)
		l := bench.Latency(ctx, mesh, conns, r.o.Duration/2, 2_000_000)
		r.progress("latency %d conn(s) meshd:  p50 %v p99 %v max %v (%d round trips)", conns, l.P50, l.P99, l.Max, l.Count)
		r.res.SetPair(k+"_p50_us", bench.Micros(l.P50), bench.Micros(d.P50))
		r.res.SetPair(k+"_p99_us", bench.Micros(l.P99), bench.Micros(d.P99))
		r.res.SetPair(k+"_max_us", bench.Micros(l.Max), bench.Micros(d.Max))
		r.res.Set(k+"_count", l.Count)
		r.res.Set(k+"_direct_count", d.Count)
		r.addErrs(k+"_errors", l.Errors, l.FirstErr)
		r.addErrs(k+"_direct_errors", d.Errors, d.FirstErr)
	}
}

// connRate: ConnWorkers clients connecting, making one round trip and
// closing, for half the duration, from source addresses spread over
// 127.0.0.2-254.
func (r *run) connRate(ctx context.Context, mesh, direct string) {
	workers := r.o.ConnWorkers
	d := bench.ConnRate(ctx, direct, workers, r.o.Duration/2, 500_000, &bench.Dialer{Spread: true})
	r.progress("connection rate direct: %.0f/s (%d connections)", d.PerSec, d.Conns)
	c := bench.ConnRate(ctx, mesh, workers, r.o.Duration/2, 500_000, &bench.Dialer{Spread: true})
	r.progress("connection rate meshd:  %.0f/s (%d connections, ratio %.3f)", c.PerSec, c.Conns, bench.Ratio(c.PerSec, d.PerSec))
	r.res.SetPair("conn_rate", c.PerSec, d.PerSec)
	r.res.Set("conn_rate_workers", workers)
	r.res.Set("conn_rate_conns", c.Conns)
	r.res.Set("conn_rate_direct_conns", d.Conns)
	r.addErrs("conn_rate_errors", c.Errors, c.FirstErr)
	r.addErrs("conn_rate_direct_errors", d.Errors, d.FirstErr)
}
