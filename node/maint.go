package node

import "time"

// MaintenanceMessage is what an exporter in maintenance answers a new
// stream with (status denied); the importer moves on to the next endpoint.
const MaintenanceMessage = "maintenance"

// maintState is the reason and start of maintenance mode.
type maintState struct {
	reason string
	since  time.Time
}

// SetMaintenance turns maintenance mode on or off (README "Operations"). On: this
// node's exports are withdrawn from the mesh at once (gossip carries the
// empty catalog within a second), new streams are answered "denied:
// maintenance", active ones finish; the node stays in the mesh and keeps
// its imports. Off: the exports are published again with their health.
// It survives a reload (it is not part of the config), not a restart.
func (n *Node) SetMaintenance(on bool, reason string) {
	n.mu.Lock()
	if on {
		if !n.maint.Load() {
			n.maintInfo = maintState{reason: reason, since: time.Now()}
		} else if reason != "" {
			n.maintInfo.reason = reason
		}
	} else {
		n.maintInfo = maintState{}
	}
	was := n.maint.Swap(on)
	n.mu.Unlock()
	n.publishExports()
	n.rebuildCatalog()
	switch {
	case on && !was:
		var active int64
		for _, e := range n.exportMap() {
			active += e.active.Load()
		}
		n.log.Warn("maintenance on: exports withdrawn, new streams refused, active ones finish", "reason", reason, "active", active)
	case !on && was:
		n.log.Info("maintenance off: exports published again")
	}
}

// Maintenance reports whether maintenance mode is on, why and since when.
func (n *Node) Maintenance() (on bool, reason string, since time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.maint.Load(), n.maintInfo.reason, n.maintInfo.since
}
