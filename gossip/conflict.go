package gossip

import "net/netip"

// selfConflict records that another node at other claims this node's name
// (memberlist's conflict delegate, with our own node as the existing one).
func (g *Gossip) selfConflict(other netip.AddrPort) {
	if g.conflict.CompareAndSwap(nil, &other) {
		g.notify()
	}
}

// NameConflict reports whether another live node has claimed this node's
// name since New, and its gossip address. A node that sees this while
// joining is the newcomer: the mesh keeps the member it knew (memberlist
// ignores our alive messages), so the newcomer should stop without Leave.
func (g *Gossip) NameConflict() (other netip.AddrPort, ok bool) {
	if p := g.conflict.Load(); p != nil {
		return *p, true
	}
	return netip.AddrPort{}, false
}

// Announce ends Config.Quiet: this node's catalog record is gossiped from
// now on. Idempotent.
func (g *Gossip) Announce() {
	if !g.quiet.Swap(false) {
		return
	}
	g.mu.Lock()
	g.version++
	if !g.leaving {
		g.announceOwnLocked(nil)
	}
	g.mu.Unlock()
	g.notify()
}
