package node

import (
	"net/netip"
	"sort"
	"time"

	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/cert"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/tunnel"
)

// catalog is an immutable snapshot of the mesh: members and, per service,
// the nodes that export it. Rebuilt on every gossip change, read lock-free.
type catalog struct {
	members  []gossip.Member                     // admitted members only (identity.go)
	certs    map[key.PublicKey]*cert.Certificate // identities of admitted members, by WireGuard key
	byName   map[string]gossip.Member
	byKey    map[key.PublicKey]string // member name by WireGuard key, for logs
	services map[string][]catalogEndpoint
}

// catalogEndpoint is one node exporting a service.
type catalogEndpoint struct {
	node    string
	site    string
	pub     key.PublicKey
	local   bool
	healthy bool // the export's own health check passes
	alive   bool // the node is alive in gossip (always true for local)
	weight  int
}

// reconcileEvery is watchGossip's safety net: a reconcile at least this
// often, riding the pacer's beat (not a wakeup of its own).
const reconcileEvery = 5 * time.Second

// watchGossip reconciles tunnel peers and the catalog on every change, and
// at least every reconcileEvery as a safety net.
func (n *Node) watchGossip() {
	tick := n.pacer.NewTimer(reconcileEvery)
	defer tick.Stop()
	n.reconcile()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.gsp.Changes():
		case <-tick.C:
		}
		n.reconcile()
		tick.Reset(reconcileEvery)
	}
}

// reconcile makes the tunnel's peers every known member that has not left
// (dead members keep their WireGuard peer so that streams can ride out a
// stall), logs state changes, and rebuilds the catalog.
func (n *Node) reconcile() {
	members, certs := n.admit(n.gsp.Members())
	peers := make([]tunnel.Peer, 0, len(members))
	for _, m := range members {
		if m.State == gossip.StateLeft || m.Meta.PublicKey.IsZero() {
			continue
		}
		peers = append(peers, tunnel.Peer{PublicKey: m.Meta.PublicKey, Endpoint: peerEndpoint(m)})
	}
	peers = n.capPeers(peers, members)
	if err := n.tun.SetPeers(peers); err != nil && !isClosedErr(err) {
		n.log.Warn("update tunnel peers", "err", err)
	}

	n.mu.Lock()
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		seen[m.Name] = true
		if old, ok := n.states[m.Name]; !ok || old != m.State {
			n.states[m.Name] = m.State
			n.log.Info("peer "+m.State.String(), "peer", m.Name, "site", m.Meta.Site, "addr", m.Addr)
		}
	}
	for name := range n.states {
		if !seen[name] {
			delete(n.states, name)
		}
	}
	n.mu.Unlock()
	n.rebuildCatalogFrom(members, certs)

	now := time.Now()
	n.checkConflict(now)
	n.remember(members, now)
	alive := 0
	for _, m := range members {
		if m.State == gossip.StateAlive || m.State == gossip.StateSuspect {
			alive++
		}
	}
	switch {
	case alive == 0 && !n.alone && len(members) > 0:
		n.alone = true
		n.log.Warn("no other member alive: this node is alone in the mesh", "known", len(members))
	case alive > 0 && n.alone:
		n.alone = false
		n.log.Info("not alone any more", "alive", alive)
	}
}

// peerEndpoint is the member's advertised WireGuard endpoint, with an
// unspecified IP replaced by the IP its gossip comes from.
func peerEndpoint(m gossip.Member) netip.AddrPort {
	ep := m.Meta.Tunnel
	if !ep.IsValid() {
		return netip.AddrPort{}
	}
	if ep.Addr().IsUnspecified() && m.Addr.IsValid() {
		ep = netip.AddrPortFrom(m.Addr.Addr(), ep.Port())
	}
	return ep
}

func (n *Node) rebuildCatalog() { n.rebuildCatalogFrom(n.admit(n.gsp.Members())) }

func (n *Node) rebuildCatalogFrom(members []gossip.Member, certs map[key.PublicKey]*cert.Certificate) {
	c := &catalog{
		members:  members,
		certs:    certs,
		byName:   make(map[string]gossip.Member, len(members)),
		byKey:    make(map[key.PublicKey]string, len(members)),
		services: make(map[string][]catalogEndpoint),
	}
	maint := n.maint.Load()
	for _, e := range n.exportMap() {
		ec := e.cfg()
		c.services[ec.Name] = append(c.services[ec.Name], catalogEndpoint{
			node: n.cfg.Name, site: n.cfg.Site, pub: n.pub, local: true,
			healthy: e.healthy.Load() && !maint, alive: true, weight: ec.Weight,
		})
	}
	for _, m := range members {
		c.byName[m.Name] = m
		if !m.Meta.PublicKey.IsZero() {
			c.byKey[m.Meta.PublicKey] = m.Name
		}
		if m.State == gossip.StateLeft || m.Meta.PublicKey.IsZero() {
			continue
		}
		for _, x := range m.Exports {
			c.services[x.Name] = append(c.services[x.Name], catalogEndpoint{
				node: m.Name, site: m.Meta.Site, pub: m.Meta.PublicKey,
				healthy: x.Healthy, alive: m.State == gossip.StateAlive, weight: x.Weight,
			})
		}
	}
	for _, eps := range c.services {
		sort.Slice(eps, func(i, j int) bool { return eps[i].node < eps[j].node })
	}
	n.catalog.Store(c)
	n.updateWarm(c)
}

// publishExports gossips this node's exports with their current health;
// none while the node is in maintenance or draining.
func (n *Node) publishExports() {
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	if n.maint.Load() || n.draining.Load() {
		n.gsp.SetExports(nil)
		return
	}
	m := n.exportMap()
	exps := make([]gossip.Export, 0, len(m))
	for _, e := range n.Config().Exports {
		if x := m[e.Name]; x != nil {
			exps = append(exps, gossip.Export{Name: e.Name, Weight: x.cfg().Weight, Healthy: x.healthy.Load()})
		}
	}
	n.gsp.SetExports(exps)
}

// peerName names the peer with key pub in logs: its gossip name, else a
// short form of the key. Lock-free; the tunnel calls it too.
func (n *Node) peerName(pub key.PublicKey) string {
	if c := n.catalog.Load(); c != nil {
		if name := c.byKey[pub]; name != "" {
			return name
		}
	}
	return pub.ShortString()
}
