package lab

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/node"
)

// Want is what a node must see before its mesh is ready: every peer in
// Peers alive, up and direct; every service in Services with at least
// Endpoints healthy endpoints; exactly Imports imports.
type Want struct {
	Peers     []string
	Services  []string
	Endpoints int
	Imports   int
}

// Missing says what st lacks of w, "" when nothing.
func (w Want) Missing(st node.Status) string {
	up := map[string]bool{}
	for _, p := range st.Peers {
		if p.State == "alive" && p.Up && p.Path == node.PathDirect {
			up[p.Name] = true
		}
	}
	for _, name := range w.Peers {
		if !up[name] {
			return fmt.Sprintf("peer %s not up", name)
		}
	}
	healthy := map[string]int{}
	for _, s := range st.Services {
		for _, e := range s.Endpoints {
			if e.Healthy {
				healthy[s.Name]++
			}
		}
	}
	for _, name := range w.Services {
		if healthy[name] < w.Endpoints {
			return fmt.Sprintf("service %s: %d healthy endpoints, want %d", name, healthy[name], w.Endpoints)
		}
	}
	if len(st.Imports) != w.Imports {
		return fmt.Sprintf("%d imports, want %d", len(st.Imports), w.Imports)
	}
	return ""
}

// Status reads the node's status from its control socket.
func (p *Proc) Status(ctx context.Context) (node.Status, error) {
	var st node.Status
	err := control.Get(ctx, p.Sock, "/status", &st)
	return st, err
}

// WaitReady polls p's status every 100 ms until it has all of want, then
// proves it with ping (say, a round trip through an import), for at most
// timeout. It fails early, with the log, if p or any of others exits; on
// timeout the error has what was missing last and the logs of p and of up
// to two others.
func WaitReady(ctx context.Context, timeout time.Duration, p *Proc, others []*Proc, want Want, ping func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		for _, q := range append([]*Proc{p}, others...) {
			if q.Exited() {
				return fmt.Errorf("node %s exited (%v):\n%s", q.Name, q.WaitErr(), q.LogTail())
			}
		}
		if st, err := p.Status(wctx); err != nil {
			last = err.Error()
		} else if why := want.Missing(st); why != "" {
			last = why
		} else if err := ping(wctx); err != nil {
			// The catalog says yes; but a round trip must prove it.
			last = "echo through the import: " + err.Error()
		} else {
			return nil
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			msg := fmt.Sprintf("mesh not ready within %v on %s: %s\n%s log:\n%s", timeout, p.Name, last, p.Name, p.LogTail())
			if len(others) <= 2 {
				for _, q := range others {
					msg += fmt.Sprintf("\n%s log:\n%s", q.Name, q.LogTail())
				}
			}
			return errors.New(msg)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// EchoPing opens one connection to the echo at addr and makes one round
// trip over it.
func EchoPing(ctx context.Context, addr string) error {
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
