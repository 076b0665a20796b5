package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/demo"
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

func runDemo(c *cli.Context) error {
	start := time.Now()
	out := c.App.Writer
	lvl := slog.LevelError
	if c.Bool("verbose") {
		lvl = slog.LevelInfo
	}
	m, err := demo.Start(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintf(out, "meshd demo: 4 nodes on loopback, sites onprem (onprem-1, onprem-2) and cloud (cloud-1, cloud-2)\n")
	ctx, cancel := context.WithTimeout(c.Context, 20*time.Second)
	defer cancel()
	if err := demo.WaitFor(ctx, m.Converged); err != nil {
		return errors.New("mesh did not converge within 20s")
	}
	fmt.Fprintf(out, "mesh up in %v: every node alive, sessions on demand (importers hold one with each exporter); echo exported on onprem-2 and cloud-1\n",
		time.Since(start).Round(time.Millisecond))

	addr := m.ImportAddr()
	conns, size := c.Int("conns"), c.Int("size")
	p := demo.Push(ctx, addr, conns, size)
	mib := float64(p.Bytes) / (1 << 20)
	fmt.Fprintf(out, "pushed %d concurrent connections through import echo on onprem-1 (%s): %.1f MiB each way, SHA-256 checked\n",
		conns, addr, float64(conns*size)/(1<<20))
	fmt.Fprintf(out, "  %d ok, %d failed, %.1f MiB in %v (%.1f MiB/s)\n", conns-p.Failed, p.Failed,
		mib, p.Elapsed.Round(time.Millisecond), mib/p.Elapsed.Seconds())
	printDemoStatus(out, m.Nodes[0].Status())
	if p.Failed > 0 {
		return fmt.Errorf("%d connections failed; first: %v", p.Failed, p.FirstErr)
	}

	// Let the mesh settle after the load so the drill starts from a steady state.
	demo.WaitFor(ctx, m.Settled)
	d := c.Duration("drill")
	fmt.Fprintf(out, "\nfailover drill from cloud-2: site onprem cut off for %v (meshd drill --site onprem --duration %v)\n", d, d)
	rep, err := m.Drill(c.Context, d)
	if err != nil {
		return err
	}
	rep.WriteText(out)
	fmt.Fprintf(out, "done in %v\n", time.Since(start).Round(time.Millisecond))
	return demo.DrillFailed(rep)
}

// printDemoStatus writes onprem-1's view: the echo endpoints and its peers.
func printDemoStatus(out io.Writer, st node.Status) {
	for _, s := range st.Services {
		for _, e := range s.Endpoints {
			fmt.Fprintf(out, "  endpoint %s on %s (site %s) healthy=%v\n", s.Name, e.Node, e.Site, e.Healthy)
		}
	}
	for _, p := range st.Peers {
		rtt := "-" // no session: nothing measured
		if p.RTTMs != nil {
			rtt = fmt.Sprintf("%.2fms", *p.RTTMs)
		}
		fmt.Fprintf(out, "  onprem-1 -> %-8s %-6s session=%-4s path=%-6s rtt=%s tx=%s rx=%s\n", p.Name, p.State, p.Session, p.Path, rtt,
			humanBytes(p.TxBytes), humanBytes(p.RxBytes))
	}
}
