package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sort"
	"time"

	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/version"
	"github.com/meshd/meshd/tunnel"
)

// controlServer answers the control socket: HTTP over a unix socket,
// mode 0600, so only the node's user can read status or start drills.
type controlServer struct {
	path string
	ln   *ownerListener
	srv  *http.Server
	done chan struct{}
}

// startControl listens on path. A stale socket file is removed; a live one
// (another meshd answering) is an error.
func startControl(n *Node, path string) (*controlServer, error) {
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("node: control socket %s is in use: is another meshd running with this data_dir?", path)
		}
		os.Remove(path)
	}
	uln, err := listenControl(path)
	if err != nil {
		return nil, fmt.Errorf("node: control socket: %w", err)
	}
	ln := newOwnerListener(uln, n.log)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.Status())
	})
	mux.HandleFunc("POST /drill", func(w http.ResponseWriter, r *http.Request) {
		var req DrillRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, "bad drill request: "+err.Error(), http.StatusBadRequest)
			return
		}
		rep, err := n.Drill(r.Context(), req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, rep)
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if err := n.ReloadFile(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, ReloadResult{OK: true, File: n.Config().Path, Changes: n.LastReload()})
	})
	mux.HandleFunc("POST /ping", func(w http.ResponseWriter, r *http.Request) {
		var req PingRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, "bad ping request: "+err.Error(), http.StatusBadRequest)
			return
		}
		res, err := n.Ping(r.Context(), req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST /maint", func(w http.ResponseWriter, r *http.Request) {
		var req MaintRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, "bad maint request: "+err.Error(), http.StatusBadRequest)
			return
		}
		n.SetMaintenance(req.On, req.Reason)
		on, reason, _ := n.Maintenance()
		writeJSON(w, MaintRequest{On: on, Reason: reason})
	})
	// Go's profiler, for whoever can open the socket (the node's user):
	// curl --unix-socket SOCK http://meshd/debug/pprof/heap > heap.pb.gz
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	cs := &controlServer{path: path, ln: ln, done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		defer close(cs.done)
		if err := cs.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("control socket", "err", err)
		}
	}()
	return cs, nil
}

func (cs *controlServer) close() {
	cs.srv.Close()
	<-cs.done
	os.Remove(cs.path)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Status returns the node's current state (docs/formats.md).
func (n *Node) Status() Status {
	c := n.catalog.Load()
	stats := n.tun.Stats()
	now := time.Now()
	st := Status{
		Node: NodeStatus{
			Name: n.cfg.Name, Site: n.cfg.Site, MeshIP: n.tun.MeshIP().String(),
			PublicKey: n.pub.String(), Gossip: n.gossipAdvertise().String(),
			Tunnel: n.tunnelAdvertise().String(), Mode: n.cfg.Tunnel.Mode, Relay: n.rly != nil,
			Version:  version.Get().Short(),
			Identity: n.identityInfo(),
		},
		Peers:    []PeerStatus{},
		Services: []ServiceStatus{},
		Imports:  []ImportStatus{},
	}
	if on, reason, since := n.Maintenance(); on {
		st.Node.Maintenance, st.Node.MaintenanceReason = true, reason
		st.Node.MaintenanceSince = since.UTC().Format(time.RFC3339)
	}
	for _, m := range c.members {
		st.Peers = append(st.Peers, n.peerStatus(m, stats, now))
	}
	for name, eps := range c.services {
		ss := ServiceStatus{Name: name, Endpoints: []EndpointStatus{}}
		for _, e := range eps {
			es := EndpointStatus{Node: e.node, Site: e.site, Healthy: e.healthy && e.alive}
			for _, im := range n.importList() {
				if im.cfg().Name == name {
					es.Active += im.activeTo(e.node)
				}
			}
			if e.local {
				if x := n.exportMap()[name]; x != nil {
					es.Active += x.active.Load()
				}
			}
			ss.Endpoints = append(ss.Endpoints, es)
		}
		st.Services = append(st.Services, ss)
	}
	sort.Slice(st.Services, func(i, j int) bool { return st.Services[i].Name < st.Services[j].Name })
	for _, im := range n.importList() {
		st.Imports = append(st.Imports, ImportStatus{
			Name: im.cfg().Name, Listen: im.ln.Addr().String(),
			Active: im.active.Load(), Total: im.total.Load(), Failed: im.failed.Load(), Denied: im.denied.Load(),
			Endpoint: im.lastEndpoint(),
		})
	}
	if n.gsp != nil {
		gs := n.gsp.Stats()
		st.Node.GossipSentBytes, st.Node.GossipReceivedBytes = gs.BytesSent, gs.BytesReceived
	}
	return st
}

// peerStatus is one member's line of Status.
func (n *Node) peerStatus(m gossip.Member, stats map[key.PublicKey]tunnel.PeerStats, now time.Time) PeerStatus {
	ps := PeerStatus{Name: m.Name, Site: m.Meta.Site, State: m.State.String(), Path: PathNone, Version: m.Meta.Version}
	if !m.Meta.PublicKey.IsZero() {
		ps.MeshIP = m.Meta.PublicKey.MeshIP().String()
		ps.PublicKey = m.Meta.PublicKey.String()
	}
	if !m.Since.IsZero() {
		ps.StateSince = m.Since.UTC().Format(StateSinceLayout)
	}
	ps.Up = n.peerUsable(m, stats[m.Meta.PublicKey], now)
	if c := n.catalog.Load().certs[m.Meta.PublicKey]; c != nil {
		ps.CertFingerprint = c.Fingerprint().String()
	}
	ps.Session = SessionDown // not alive (or not a tunnel peer): no session state to show
	if ts, ok := stats[m.Meta.PublicKey]; ok {
		if ts.Endpoint.IsValid() {
			ps.Endpoint = ts.Endpoint.String()
		}
		if !ts.LastHandshake.IsZero() {
			ps.LastHandshake = ts.LastHandshake.Format(time.RFC3339)
		}
		ps.Streams, ps.TxBytes, ps.RxBytes = ts.Streams, ts.TxBytes, ts.RxBytes
		// Path and RTT only for an alive peer whose session is up: a
		// recent handshake alone proves nothing about the data path,
		// and an idle or gone peer's last values would be stale.
		if m.State == gossip.StateAlive {
			ps.Session = ts.Session
			if ts.SessionUp {
				ps.Path, ps.RelayVia = ts.Path, ts.RelayVia
				if ts.RTT > 0 {
					rtt := float64(ts.RTT.Microseconds()) / 1000
					ps.RTTMs = &rtt
				}
			}
		}
	}
	return ps
}
