package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/node"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a self-contained 4-node mesh on loopback, push traffic through it, run a drill, report",
		Description: "Starts four in-process nodes in sites onprem and cloud on 127.0.0.1, an echo\n" +
			"service exported in both sites and imported on onprem-1, then pushes\n" +
			"checksummed traffic over many concurrent connections, runs a failover drill\n" +
			"(site onprem cut off, watched from cloud-2) and prints what happened.\n" +
			"Needs no config, no root and no network beyond loopback.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "conns", Value: 64, Usage: "concurrent client connections"},
			&cli.IntFlag{Name: "size", Value: 1 << 20, Usage: "bytes each connection sends (and gets back)"},
			&cli.DurationFlag{Name: "drill", Value: 3 * time.Second, Usage: "how long the closing failover drill cuts site onprem off"},
			&cli.BoolFlag{Name: "verbose", Usage: "show the nodes' logs"},
		},
		Action: runDemo,
	}
}

type demoNode struct {
	cfg  *config.Config
	node *node.Node
}

func runDemo(c *cli.Context) error {
	start := time.Now()
	out := c.App.Writer
	lvl := slog.LevelError
	if c.Bool("verbose") {
		lvl = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	dir, err := os.MkdirTemp("", "meshd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	clusterKey := make([]byte, 32)
	rand.Read(clusterKey)

	var echoes []*echo.Server
	defer func() {
		for _, e := range echoes {
			e.Close()
		}
	}()
	newEcho := func() (string, error) {
		e, err := echo.Listen("127.0.0.1:0")
		if err != nil {
			return "", err
		}
		echoes = append(echoes, e)
		return e.Addr(), nil
	}
	onpremEcho, err := newEcho()
	if err != nil {
		return err
	}
	cloudEcho, err := newEcho()
	if err != nil {
		return err
	}

	loop := netip.MustParseAddrPort("127.0.0.1:0")
	mk := func(name, site string) *config.Config {
		return &config.Config{
			Name: name, Site: site, DataDir: filepath.Join(dir, name),
			Cluster: config.Cluster{Key: clusterKey},
			Gossip:  config.Gossip{Bind: loop},
			Tunnel:  config.Tunnel{Listen: loop, Mode: config.ModeUserspace},
			Control: config.Control{Socket: filepath.Join(dir, name+".sock")},
			Failover: config.Failover{SessionTimeout: config.DefaultSessionTimeout,
				HoldDown: config.DefaultHoldDown, DrainGrace: time.Second},
		}
	}
	cfgs := []*config.Config{mk("onprem-1", "onprem"), mk("onprem-2", "onprem"), mk("cloud-1", "cloud"), mk("cloud-2", "cloud")}
	cfgs[0].Imports = []config.Import{{Name: "echo", Listen: loop, Sites: []string{"onprem", "cloud"}, Balance: config.BalanceLeastConn}}
	// cloud-2 also imports echo preferring onprem: the drill cuts onprem off
	// and watches cloud-2 fail over to cloud-1 and back.
	cfgs[3].Imports = []config.Import{{Name: "echo", Listen: loop, Sites: []string{"onprem", "cloud"}, Balance: config.BalanceLeastConn}}
	cfgs[1].Exports = []config.Export{{Name: "echo", Target: onpremEcho, Weight: 1}}
	cfgs[2].Exports = []config.Export{{Name: "echo", Target: cloudEcho, Weight: 1}}

	var nodes []*demoNode
	defer func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			nodes[i].node.Close()
		}
	}()
	for i, cfg := range cfgs {
		if i > 0 {
			cfg.Cluster.Join = []string{nodes[0].node.GossipAddr().String()}
		}
		n, err := node.New(cfg, logger.With("node", cfg.Name))
		if err != nil {
			return err
		}
		if err := n.Start(); err != nil {
			return fmt.Errorf("start %s: %w", cfg.Name, err)
		}
		nodes = append(nodes, &demoNode{cfg: cfg, node: n})
	}
	fmt.Fprintf(out, "meshd demo: 4 nodes on loopback, sites onprem (onprem-1, onprem-2) and cloud (cloud-1, cloud-2)\n")

	// Wait for a full mesh: every node sees the 3 others alive with a session.
	ctx, cancel := context.WithTimeout(c.Context, 20*time.Second)
	defer cancel()
	if err := waitFor(ctx, func() bool {
		for _, dn := range nodes {
			st := dn.node.Status()
			up := 0
			for _, p := range st.Peers {
				if p.State == "alive" && p.Path == node.PathDirect && p.RTT() > 0 {
					up++
				}
			}
			if up != 3 || len(st.Services) != 1 || len(st.Services[0].Endpoints) != 2 || !st.Services[0].Endpoints[0].Healthy {
				return false
			}
		}
		return true
	}); err != nil {
		return errors.New("mesh did not converge within 20s")
	}
	fmt.Fprintf(out, "mesh up in %v: 6 WireGuard tunnels, 6 yamux sessions; echo exported on onprem-2 and cloud-1\n",
		time.Since(start).Round(time.Millisecond))

	addr := nodes[0].node.ImportAddr("echo")
	conns, size := c.Int("conns"), c.Int("size")
	t0 := time.Now()
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoRoundTrip(ctx, addr, size); err != nil {
				failed.Add(1)
				errOnce.Do(func() { firstErr = err })
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	total := int64(conns) * int64(size) * 2
	fmt.Fprintf(out, "pushed %d concurrent connections through import echo on onprem-1 (%s): %.1f MiB each way, SHA-256 checked\n",
		conns, addr, float64(conns*size)/(1<<20))
	fmt.Fprintf(out, "  %d ok, %d failed, %.1f MiB in %v (%.1f MiB/s)\n", int64(conns)-failed.Load(), failed.Load(),
		float64(total)/(1<<20), el.Round(time.Millisecond), float64(total)/(1<<20)/el.Seconds())
	st := nodes[0].node.Status()
	for _, s := range st.Services {
		for _, e := range s.Endpoints {
			fmt.Fprintf(out, "  endpoint %s on %s (site %s) healthy=%v\n", s.Name, e.Node, e.Site, e.Healthy)
		}
	}
	for _, p := range st.Peers {
		fmt.Fprintf(out, "  onprem-1 -> %-8s %-6s path=%s rtt=%.2fms tx=%s rx=%s\n", p.Name, p.State, p.Path, p.RTT(),
			humanBytes(p.TxBytes), humanBytes(p.RxBytes))
	}
	if failed.Load() > 0 {
		return fmt.Errorf("%d connections failed; first: %v", failed.Load(), firstErr)
	}

	// Let the mesh settle after the load (a peer slowed by it may be in
	// its failback hold-down) so the drill starts from a steady state.
	waitFor(ctx, func() bool {
		for _, p := range nodes[3].node.Status().Peers {
			if !p.Up {
				return false
			}
		}
		return true
	})
	d := c.Duration("drill")
	fmt.Fprintf(out, "\nfailover drill from cloud-2: site onprem cut off for %v (meshd drill --site onprem --duration %v)\n", d, d)
	rep, err := nodes[3].node.Drill(c.Context, node.DrillRequest{Site: "onprem", DurationMS: d.Milliseconds()})
	if err != nil {
		return fmt.Errorf("drill: %w", err)
	}
	rep.WriteText(out)
	fmt.Fprintf(out, "done in %v\n", time.Since(start).Round(time.Millisecond))
	for _, s := range rep.Services {
		if s.Failed > 0 || s.RTOMS < 0 {
			return fmt.Errorf("drill: service %s had %d failed probes (rto %dms)", s.Name, s.Failed, s.RTOMS)
		}
	}
	return nil
}

// echoRoundTrip sends size random bytes through the echo at addr, half-
// closes, and checks the echo's SHA-256.
func echoRoundTrip(ctx context.Context, addr string, size int) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	payload := make([]byte, size)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, bytes.NewReader(payload))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	if err := <-werr; err != nil {
		return err
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("echo mismatch: got %d bytes", n)
	}
	return nil
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
