package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/meshd/meshd/internal/statusfmt"
	"github.com/meshd/meshd/node"
)

// RunOptions are the knobs of `meshd demo`.
type RunOptions struct {
	Conns  int           // concurrent client connections
	Size   int           // bytes each connection sends (and gets back)
	Drill  time.Duration // how long the closing drill cuts site onprem off
	Logger *slog.Logger  // the nodes' logs
}

// convergeTimeout bounds the mesh's start, and the traffic pushed through it.
const convergeTimeout = 20 * time.Second

// Run is `meshd demo`: it starts the mesh, pushes o.Conns connections of
// o.Size bytes through onprem-1's import, runs a drill of site onprem from
// cloud-2, writes what happened to out and closes the mesh. It fails if
// the mesh does not converge, a connection fails, or the drill failed
// (DrillFailed).
func Run(ctx context.Context, out io.Writer, o RunOptions) error {
	start := time.Now()
	m, err := Start(o.Logger)
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintf(out, "meshd demo: 4 nodes on loopback, sites onprem (onprem-1, onprem-2) and cloud (cloud-1, cloud-2)\n")
	wctx, cancel := context.WithTimeout(ctx, convergeTimeout)
	defer cancel()
	if err := WaitFor(wctx, m.Converged); err != nil {
		return errors.New("mesh did not converge within 20s")
	}
	fmt.Fprintf(out, "mesh up in %v: every node alive, sessions on demand (importers hold one with each exporter); echo exported on onprem-2 and cloud-1\n",
		time.Since(start).Round(time.Millisecond))

	addr := m.ImportAddr()
	p := Push(wctx, addr, o.Conns, o.Size)
	mib := float64(p.Bytes) / (1 << 20)
	fmt.Fprintf(out, "pushed %d concurrent connections through import echo on onprem-1 (%s): %.1f MiB each way, SHA-256 checked\n",
		o.Conns, addr, float64(o.Conns*o.Size)/(1<<20))
	fmt.Fprintf(out, "  %d ok, %d failed, %.1f MiB in %v (%.1f MiB/s)\n", o.Conns-p.Failed, p.Failed,
		mib, p.Elapsed.Round(time.Millisecond), mib/p.Elapsed.Seconds())
	WriteStatus(out, m.Nodes[0].Status())
	if p.Failed > 0 {
		return fmt.Errorf("%d connections failed; first: %v", p.Failed, p.FirstErr)
	}

	// Let the mesh settle after the load so the drill starts from a steady state.
	WaitFor(wctx, m.Settled)
	fmt.Fprintf(out, "\nfailover drill from cloud-2: site onprem cut off for %v (meshd drill --site onprem --duration %v)\n", o.Drill, o.Drill)
	rep, err := m.Drill(ctx, o.Drill)
	if err != nil {
		return err
	}
	rep.WriteText(out)
	fmt.Fprintf(out, "done in %v\n", time.Since(start).Round(time.Millisecond))
	return DrillFailed(rep)
}

// WriteStatus writes onprem-1's view: the echo endpoints and its peers.
func WriteStatus(out io.Writer, st node.Status) {
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
			statusfmt.Bytes(p.TxBytes), statusfmt.Bytes(p.RxBytes))
	}
}
