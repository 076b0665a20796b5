// Package demo builds the self-contained mesh of `meshd demo`: four
// in-process nodes in sites onprem and cloud on 127.0.0.1, an echo
// service exported in both sites (onprem-2, cloud-1) and imported on
// onprem-1 and cloud-2; it pushes checksummed traffic through the import
// and runs a failover drill. Run is the whole of `meshd demo`, writing its report.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/node"
)

// Names of the nodes, in start order; onprem-1 is everyone's seed.
var Names = []string{"onprem-1", "onprem-2", "cloud-1", "cloud-2"}

// Mesh is the four running nodes and their echo backends.
type Mesh struct {
	Nodes  []*node.Node // in the order of Names
	dir    string
	echoes []*echo.Server
}

// Configs are the nodes' configs, in the order of Names: data dirs and
// control sockets under dir, every address on 127.0.0.1 with a port the
// kernel picks (the seed's gossip address is filled in at start). The
// echo service runs at onpremEcho (exported by onprem-2) and cloudEcho
// (cloud-1); onprem-1 imports it preferring onprem, and so does cloud-2,
// from where the drill cuts onprem off.
func Configs(dir string, clusterKey []byte, onpremEcho, cloudEcho string) []*config.Config {
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
	cfgs := []*config.Config{mk(Names[0], "onprem"), mk(Names[1], "onprem"), mk(Names[2], "cloud"), mk(Names[3], "cloud")}
	imp := []config.Import{{Name: "echo", Listen: loop, Sites: []string{"onprem", "cloud"}, Balance: config.BalanceLeastConn}}
	cfgs[0].Imports = imp
	cfgs[3].Imports = append([]config.Import(nil), imp...)
	cfgs[1].Exports = []config.Export{{Name: "echo", Target: onpremEcho, Weight: 1}}
	cfgs[2].Exports = []config.Export{{Name: "echo", Target: cloudEcho, Weight: 1}}
	return cfgs
}

// Start starts the echo backends and the four nodes, logging to logger.
// On error nothing is left running.
func Start(logger *slog.Logger) (m *Mesh, err error) {
	dir, err := os.MkdirTemp("", "meshd-demo-")
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	m = &Mesh{dir: dir}
	defer func() {
		if err != nil {
			m.Close()
			m = nil
		}
	}()
	var addrs []string
	for range 2 {
		e, err := echo.Listen("127.0.0.1:0")
		if err != nil {
			return m, fmt.Errorf("demo: %w", err)
		}
		m.echoes = append(m.echoes, e)
		addrs = append(addrs, e.Addr())
	}
	key := make([]byte, 32)
	rand.Read(key)
	for i, cfg := range Configs(dir, key, addrs[0], addrs[1]) {
		if i > 0 {
			cfg.Cluster.Join = []string{m.Nodes[0].GossipAddr().String()}
		}
		n, err := node.New(cfg, logger.With("node", cfg.Name))
		if err != nil {
			return m, err
		}
		if err := n.Start(); err != nil {
			n.Close()
			return m, fmt.Errorf("start %s: %w", cfg.Name, err)
		}
		m.Nodes = append(m.Nodes, n)
	}
	return m, nil
}

// Close stops the nodes (last first) and the backends and removes the
// directory.
func (m *Mesh) Close() {
	for i := len(m.Nodes) - 1; i >= 0; i-- {
		m.Nodes[i].Close()
	}
	for _, e := range m.echoes {
		e.Close()
	}
	os.RemoveAll(m.dir)
}

// Converged reports whether every node sees the three others alive and
// direct with a measured RTT, and the echo service with both endpoints,
// the first healthy.
func (m *Mesh) Converged() bool {
	for _, n := range m.Nodes {
		st := n.Status()
		if len(st.Services) != 1 || len(st.Services[0].Endpoints) != 2 || !st.Services[0].Endpoints[0].Healthy {
			return false
		}
		// Sessions are made on demand (README "Performance", fleet scale): every peer alive, direct
		// with an RTT where a session is up; an importer holds one with
		// every exporter of its service.
		exporter := map[string]bool{}
		for _, e := range st.Services[0].Endpoints {
			exporter[e.Node] = len(st.Imports) > 0
		}
		alive := 0
		for _, p := range st.Peers {
			switch {
			case p.State != "alive":
				return false
			case p.Session == node.SessionUp && (p.Path != node.PathDirect || p.RTT() <= 0):
				return false
			case exporter[p.Name] && p.Session != node.SessionUp:
				return false
			}
			alive++
		}
		if alive != len(m.Nodes)-1 {
			return false
		}
	}
	return true
}

// Settled reports whether cloud-2, the drill's observer, has every peer
// up: a peer slowed by the load may be in its failback hold-down.
func (m *Mesh) Settled() bool {
	for _, p := range m.Nodes[3].Status().Peers {
		if !p.Up {
			return false
		}
	}
	return true
}

// WaitFor polls cond every 50 ms until it holds or ctx ends.
func WaitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// ImportAddr is onprem-1's echo import.
func (m *Mesh) ImportAddr() string { return m.Nodes[0].ImportAddr("echo") }

// Drill cuts site onprem off for d, watched from cloud-2.
func (m *Mesh) Drill(ctx context.Context, d time.Duration) (failover.Report, error) {
	rep, err := m.Nodes[3].Drill(ctx, node.DrillRequest{Site: "onprem", DurationMS: d.Milliseconds()})
	if err != nil {
		return rep, fmt.Errorf("drill: %w", err)
	}
	return rep, nil
}

// DrillFailed says which service of rep had failed probes or never
// recovered, nil if none.
func DrillFailed(rep failover.Report) error {
	for _, s := range rep.Services {
		if s.Failed > 0 || s.RTOMS < 0 {
			return fmt.Errorf("drill: service %s had %d failed probes (rto %dms)", s.Name, s.Failed, s.RTOMS)
		}
	}
	return nil
}

// PushResult is the outcome of Push.
type PushResult struct {
	Conns, Failed int
	Bytes         int64 // both ways, of the connections that succeeded and failed alike
	Elapsed       time.Duration
	FirstErr      error
}

// Push sends size random bytes over each of conns concurrent connections
// to the echo at addr and checks each echo's SHA-256.
func Push(ctx context.Context, addr string, conns, size int) PushResult {
	r := PushResult{Conns: conns, Bytes: int64(conns) * int64(size) * 2}
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := RoundTrip(ctx, addr, size); err != nil {
				mu.Lock()
				r.Failed++
				if r.FirstErr == nil {
					r.FirstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.Elapsed = time.Since(t0)
	return r
}

// RoundTrip sends size random bytes through the echo at addr, half-
// closes, and checks the echo's SHA-256.
func RoundTrip(ctx context.Context, addr string, size int) error {
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
