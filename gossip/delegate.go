package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. They run on memberlist's
// goroutines, some under memberlist's own locks, so each one only updates
// Gossip's tables under g.mu (never calling memberlist while holding it),
// signals Changes without blocking, and returns.
type delegate struct{ g *Gossip }

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate     = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
)

// NodeMeta returns this node's encoded Meta (checked to fit by New).
func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.g.metaBytes) > limit {
		return nil
	}
	return d.g.metaBytes
}

// NotifyMsg receives a catalog record, by UDP gossip or TCP. b is only valid
// during the call.
func (d *delegate) NotifyMsg(b []byte) {
	if len(b) == 0 {
		return // placeholder that only invalidated a queued broadcast
	}
	if len(b) >= 2 && b[0] == wireVersion && b[1] == kindUser {
		d.g.deliverUser(b)
		return
	}
	rec, name, err := decodeRecordMsg(b)
	if err != nil {
		d.g.badInput("message", name, err)
		return
	}
	d.g.mergeRecords([]*record{rec}, true)
}

// GetBroadcasts hands memberlist the catalog records waiting to be gossiped.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	// memberlist asks at each gossip tick and before each UDP message it
	// sends (to piggyback broadcasts): wakeups it has anyway, the beat of
	// Config.Pacer.
	d.g.polls.Add(1)
	d.g.pacer.Beat(time.Now())
	return d.g.queue.GetBroadcasts(overhead, limit)
}

// LocalState returns the whole catalog for a push/pull exchange.
func (d *delegate) LocalState(join bool) []byte { return d.g.localState() }

// MergeRemoteState merges a peer's catalog from a push/pull exchange.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	recs, err := decodeState(buf)
	if err != nil {
		d.g.badInput("state", "", err)
		return
	}
	d.g.mergeRecords(recs, true) // newer records learned by push/pull are passed on too (UDP-blocked members)
}

// NotifyAlive vets every alive message before memberlist takes it: a new
// name is refused while MaxMembers are listed.
func (d *delegate) NotifyAlive(n *memberlist.Node) error { return d.g.admitMember(n.Name) }

// NotifyJoin is called when a node becomes alive (new, or back from dead/left).
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	if n.Name != d.g.name {
		d.g.memberAlive(n)
	}
}

// NotifyUpdate is called when an alive node's meta changes.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	if n.Name != d.g.name {
		d.g.memberAlive(n)
	}
}

// NotifyLeave is called when a node is declared dead or has left.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	if n.Name != d.g.name {
		d.g.memberGone(n.Name)
	}
}

// NotifyConflict is called when two nodes claim the same name.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	g := d.g
	if existing.Name == g.name {
		g.selfConflict(addrPort(other.Addr, other.Port))
	}
	if g.limit.allow("conflict:"+existing.Name, time.Now()) {
		g.log.Error("gossip: node name conflict: two nodes claim the same name; names must be unique in the mesh",
			"name", existing.Name,
			"known", addrPort(existing.Addr, existing.Port).String(),
			"other", addrPort(other.Addr, other.Port).String())
	}
}

// AckPayload adds nothing to probe acks.
func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete records a successful direct probe of other.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	d.g.probeOK(other.Name, rtt)
}

// broadcast is one catalog record in the broadcast queue. It is named after
// the node the record describes, so a newer record replaces a queued older
// one.
type broadcast struct {
	name string
	msg  []byte
	sent chan struct{} // closed when done (sent enough times or replaced); may be nil
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Name() string { return b.name }

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}

func (b *broadcast) Message() []byte { return b.msg }

func (b *broadcast) Finished() {
	if b.sent != nil {
		close(b.sent)
	}
}
