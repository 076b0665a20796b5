package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/relay"
)

// Relay client backoff bounds.
const (
	relayMinBackoff = 200 * time.Millisecond
	relayMaxBackoff = 5 * time.Second
	relayDialWait   = 5 * time.Second
)

// relayServer is this node's relay (relay.enabled).
type relayServer struct {
	srv  *relay.Server
	ln   net.Listener
	done chan struct{}
}

func startRelayServer(n *Node) (*relayServer, error) {
	srv, err := relay.NewServer(relay.ServerConfig{ClusterKey: n.cfg.Cluster.Key, PrivateKey: n.priv, Logger: n.log.With("component", "relay")})
	if err != nil {
		return nil, fmt.Errorf("node: relay: %w", err)
	}
	srv.SetClusterKeys(n.cfg.Cluster.Keys) // every key of the file is accepted (rotation)
	ln, err := net.Listen("tcp", n.cfg.Relay.Listen.String())
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("node: relay.listen %s: %w", n.cfg.Relay.Listen, err)
	}
	rs := &relayServer{srv: srv, ln: ln, done: make(chan struct{})}
	go func() {
		defer close(rs.done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			n.log.Warn("relay server", "err", err)
		}
	}()
	return rs, nil
}

func (rs *relayServer) close() {
	rs.srv.Close()
	rs.ln.Close()
	<-rs.done
}

// relayAdvertise is the relay address others use: relay.advertise, else
// the bound listener (an unspecified IP is replaced by peers, as for the
// tunnel).
func (n *Node) relayAdvertise() netip.AddrPort {
	if n.cfg.Relay.Advertise.IsValid() {
		return n.cfg.Relay.Advertise
	}
	if n.rly == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(n.rly.ln.Addr().String())
	return ap
}

// relayCandidate is a relay this node may use.
type relayCandidate struct {
	name string
	addr netip.AddrPort
	pub  key.PublicKey // the relay node's WireGuard key (from its signed record): it must prove it
}

// relayCandidates lists the relays known by gossip (and this node's own)
// in the order every node tries them.
func (n *Node) relayCandidates() []relayCandidate {
	var out []relayCandidate
	if n.rly != nil {
		out = append(out, relayCandidate{name: n.cfg.Name, addr: n.relayAdvertise(), pub: n.pub})
	}
	for _, m := range n.catalog.Load().members {
		if m.State != gossip.StateAlive || !m.Meta.Relay.IsValid() {
			continue
		}
		addr := m.Meta.Relay
		if addr.Addr().IsUnspecified() && m.Addr.IsValid() {
			addr = netip.AddrPortFrom(m.Addr.Addr(), addr.Port())
		}
		out = append(out, relayCandidate{name: m.Name, addr: addr, pub: m.Meta.PublicKey})
	}
	// A relay forwards only between its own clients, so every node must
	// pick the same one: the first alive relay by name, for everyone.
	// (Per-site home relays would need relays to forward to each other,
	// or nodes to reach a peer's home relay; not built yet.)
	sort.SliceStable(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// relayLoop keeps this node connected to the best reachable relay and
// makes it the tunnel's fallback path; when the relay dies it moves to the
// next one, with backoff.
func (n *Node) relayLoop() {
	backoff := relayMinBackoff
	skip := map[string]time.Time{} // relays that just failed, until when
	for n.ctx.Err() == nil {
		var c *relay.Client
		var via relayCandidate
		now := time.Now()
		for _, rc := range n.relayCandidates() {
			if until, bad := skip[rc.name]; bad && now.Before(until) {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, relayDialWait)
			cl, err := relay.Dial(ctx, rc.addr.String(), relay.ClientConfig{
				ClusterKey: n.Config().Cluster.Key, PublicKey: n.pub, // the key in force (rotation)
				PrivateKey: n.priv, RelayKey: rc.pub, // both prove their WireGuard keys (SPEC §8)
				Logger: n.log.With("component", "relay-client"), OnPacket: n.tun.DeliverRelay,
			})
			cancel()
			if err != nil {
				if n.ctx.Err() == nil {
					n.log.Debug("relay unreachable", "relay", rc.name, "addr", rc.addr, "err", err)
				}
				skip[rc.name] = now.Add(relayMaxBackoff)
				continue
			}
			c, via = cl, rc
			break
		}
		if c == nil {
			if !sleepCtx(n.ctx, backoff) {
				return
			}
			backoff = min(backoff*2, relayMaxBackoff)
			continue
		}
		backoff = relayMinBackoff
		n.tun.SetRelay(c, via.name)
		n.relayStats.use(c)
		n.log.Info("relay connected", "relay", via.name, "addr", via.addr)
		select {
		case <-n.ctx.Done():
		case <-c.Done():
			n.log.Warn("relay connection lost; moving on", "relay", via.name, "err", c.Err())
			skip[via.name] = time.Now().Add(relayMinBackoff * 4)
		}
		n.tun.SetRelay(nil, "")
		c.Close()
		n.relayStats.done(c)
	}
}
