package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/relay"
)

// relayDialWait bounds one relay dial; the backoff is failover's
// (RelayChooser).
const relayDialWait = 5 * time.Second

// relayServer is this node's relay (relay.enabled).
type relayServer struct {
	srv  *relay.Server
	ln   net.Listener
	done chan struct{}
}

func startRelayServer(n *Node) (*relayServer, error) {
	srv, err := relay.NewServer(relay.ServerConfig{ClusterKey: n.cfg.Cluster.Key, PrivateKey: n.priv, Logger: n.log.With("component", "relay"), Namer: n.peerName})
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

// relayCandidates lists the relays known by gossip (and this node's own);
// failover.RelayChooser puts them in the order every node tries them.
func (n *Node) relayCandidates() []failover.Relay {
	var out []failover.Relay
	if n.rly != nil {
		out = append(out, failover.Relay{Name: n.cfg.Name, Addr: n.relayAdvertise(), Key: n.pub})
	}
	for _, m := range n.catalog.Load().members {
		if m.State != gossip.StateAlive || !m.Meta.Relay.IsValid() {
			continue
		}
		addr := m.Meta.Relay
		if addr.Addr().IsUnspecified() && m.Addr.IsValid() {
			addr = netip.AddrPortFrom(m.Addr.Addr(), addr.Port())
		}
		out = append(out, failover.Relay{Name: m.Name, Addr: addr, Key: m.Meta.PublicKey})
	}
	// (Per-site home relays would need relays to forward to each other,
	// or nodes to reach a peer's home relay; not built yet.)
	return out
}

// relayLoop keeps this node connected to the best reachable relay and
// makes it the tunnel's fallback path; when the relay dies it moves to the
// next one, with backoff (the choice is failover.RelayChooser's).
func (n *Node) relayLoop() {
	var rc failover.RelayChooser
	for n.ctx.Err() == nil {
		c, via := n.dialRelay(&rc)
		if c == nil {
			if !sleepCtx(n.ctx, rc.Wait()) {
				return
			}
			continue
		}
		rc.Connected()
		n.tun.SetRelay(c, via.Name)
		n.relayStats.use(c)
		n.log.Info("relay connected", "relay", via.Name, "addr", via.Addr)
		select {
		case <-n.ctx.Done():
		case <-c.Done():
			n.log.Warn("relay connection lost; moving on", "relay", via.Name, "err", c.Err())
			rc.Lost(via.Name, time.Now())
		}
		n.tun.SetRelay(nil, "")
		c.Close()
		n.relayStats.done(c)
	}
}

// dialRelay tries the relays rc offers now, in order, and returns the
// first that answers (nil if none did).
func (n *Node) dialRelay(rc *failover.RelayChooser) (*relay.Client, failover.Relay) {
	now := time.Now()
	for _, r := range rc.Candidates(n.relayCandidates(), now) {
		ctx, cancel := context.WithTimeout(n.ctx, relayDialWait)
		cl, err := relay.Dial(ctx, r.Addr.String(), relay.ClientConfig{
			ClusterKey: n.Config().Cluster.Key, PublicKey: n.pub, // the key in force (rotation)
			PrivateKey: n.priv, RelayKey: r.Key, // both prove their WireGuard keys (README "Identity and policy")
			Logger: n.log.With("component", "relay-client"), OnPacket: n.tun.DeliverRelay,
		})
		cancel()
		if err == nil {
			return cl, r
		}
		if n.ctx.Err() == nil {
			n.log.Debug("relay unreachable", "relay", r.Name, "addr", r.Addr, "err", err)
		}
		rc.DialFailed(r.Name, now)
	}
	return nil, failover.Relay{}
}
