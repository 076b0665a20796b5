package gossip

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// maxUnknown bounds the catalog records held for nodes not (yet) members.
const maxUnknown = 1024

// peer is another node in the member table.
type peer struct {
	name         string
	addr         netip.AddrPort
	meta         Meta
	rawMeta      []byte // as last received, to warn once per bad meta
	state        State
	since        time.Time
	gone         time.Time // when it became dead or left
	suspectUntil time.Time // while suspect: back to alive after this unless declared dead
	rtt          time.Duration
}

// catalogEntry is the newest record known for a node. Records and their
// export slices are never modified once stored, only replaced.
type catalogEntry struct {
	rec  *record
	seen time.Time
}

// memberAlive handles memberlist's join and update events.
func (g *Gossip) memberAlive(n *memberlist.Node) {
	meta, metaErr := decodeMeta(n.Meta)
	now := time.Now()

	g.mu.Lock()
	p := g.peers[n.Name]
	isNew := p == nil
	if isNew {
		p = &peer{name: n.Name}
		g.peers[n.Name] = p
	}
	warnMeta := metaErr != nil && (isNew || !bytes.Equal(p.rawMeta, n.Meta))
	if metaErr != nil {
		meta = Meta{}
	}
	metaChanged := !isNew && (p.meta != meta || !bytes.Equal(p.rawMeta, n.Meta))
	p.rawMeta = bytes.Clone(n.Meta)
	p.meta = meta
	p.addr = addrPort(n.Addr, n.Port)
	up := isNew || p.state == StateDead || p.state == StateLeft
	back := p.state == StateDead // and not new: a healed partition, or a node that came back
	if p.state != StateAlive || isNew {
		p.state = StateAlive
		p.since = now
	}
	p.gone, p.suspectUntil = time.Time{}, time.Time{}
	g.countLocked()
	addr := p.addr
	g.mu.Unlock()

	if warnMeta {
		g.log.Warn("gossip: member has unreadable meta; listing it without site, key or endpoints",
			"name", n.Name, "addr", addr.String(), "err", metaErr)
	}
	if back {
		// Its refutation is a broadcast: members that missed it (and
		// members still held dead by others) learn it by catch-up syncs
		// (catchup.go).
		g.kickCatchUp(netip.AddrPort{})
	}
	switch {
	case up:
		g.log.Info("gossip: member up", "name", n.Name, "addr", addr.String(), "site", meta.Site)
	case metaChanged:
		g.log.Info("gossip: member updated", "name", n.Name, "addr", addr.String(), "site", meta.Site)
	}
	g.notify()
}

// memberGone handles memberlist's leave event, which covers both failures
// and graceful leaves: the node's catalog record says which.
func (g *Gossip) memberGone(name string) {
	now := time.Now()
	g.mu.Lock()
	p := g.peers[name]
	if p == nil || p.state == StateDead || p.state == StateLeft {
		g.mu.Unlock()
		return
	}
	p.state = StateDead
	if c := g.catalog[name]; c != nil && c.rec.leaving {
		p.state = StateLeft
	}
	p.since, p.gone, p.suspectUntil = now, now, time.Time{}
	g.countLocked()
	st := p.state
	g.mu.Unlock()

	if st == StateLeft {
		g.log.Info("gossip: member left", "name", name)
	} else {
		g.log.Warn("gossip: member failed", "name", name)
	}
	g.notify()
}

// markSuspect is called when memberlist logs that its probe of name failed,
// just before it marks the node suspect (memberlist has no event for that).
func (g *Gossip) markSuspect(name string) {
	now := time.Now()
	g.mu.Lock()
	p := g.peers[name]
	if p == nil || p.state != StateAlive {
		g.mu.Unlock()
		return
	}
	p.state = StateSuspect
	p.since = now
	// memberlist declares it dead within its longest suspicion timeout, or
	// the node refutes and stays alive: then we revert.
	scale := math.Max(1, math.Log10(float64(g.numNodes.Load())))
	p.suspectUntil = now.Add(time.Duration(float64(g.suspectMax)*scale) + 2*g.probe)
	g.countLocked()
	g.mu.Unlock()
	g.log.Info("gossip: member suspect", "name", name)
	g.notify()
}

// probeOK records a successful probe: the node answers, so it is not suspect.
func (g *Gossip) probeOK(name string, rtt time.Duration) {
	g.mu.Lock()
	p := g.peers[name]
	if p == nil {
		g.mu.Unlock()
		return
	}
	p.rtt = rtt
	back := p.state == StateSuspect
	if back {
		p.state, p.since, p.suspectUntil = StateAlive, time.Now(), time.Time{}
	}
	g.mu.Unlock()
	if back {
		g.log.Info("gossip: member alive again", "name", name)
		g.notify()
	}
}

// countLocked refreshes the node count used to size broadcast retransmits.
func (g *Gossip) countLocked() {
	n := int64(1)
	for _, p := range g.peers {
		if p.state == StateAlive || p.state == StateSuspect {
			n++
		}
	}
	g.numNodes.Store(n)
}

// ownRecordLocked returns this node's current catalog record, signed. The
// signed record is cached until the version or the leaving flag changes.
func (g *Gossip) ownRecordLocked() *record {
	if g.own != nil && g.own.version == g.version && g.own.leaving == g.leaving {
		return g.own
	}
	r := &record{name: g.name, version: g.version, leaving: g.leaving, exports: g.exports}
	if g.leaving {
		r.exports = []Export{}
	}
	signRecord(r, g.meta, g.cert, g.signKey)
	g.own = r
	return r
}

// announceOwnLocked queues this node's record for gossip; sent, if not nil,
// is closed once it has gone out. Records too big for a UDP packet go to
// every member over TCP instead.
func (g *Gossip) announceOwnLocked(sent chan struct{}) {
	if g.quiet.Load() {
		if sent != nil {
			close(sent)
		}
		return // Announce sends it
	}
	msg := encodeRecordMsg(g.ownRecordLocked())
	g.queueLocked(g.name, msg, sent)
	if len(msg) > maxBroadcastBytes {
		select {
		case g.bigKick <- struct{}{}:
		default:
		}
	}
}

// queueLocked queues a record message, replacing any queued one for the
// same node. The queue never calls back into Gossip, so holding g.mu keeps
// queued versions in order.
func (g *Gossip) queueLocked(node string, msg []byte, sent chan struct{}) {
	if len(msg) > maxBroadcastBytes {
		msg = nil // still replaces an older queued record; receivers ignore it
	}
	g.queue.QueueBroadcast(&broadcast{name: "catalog/" + node, msg: msg, sent: sent})
	if ml := g.wake.Load(); ml != nil {
		ml.WakeGossip() // memberlist's gossip loop sleeps while nothing is queued
	}
}

// mergeRecords applies records received from peers: each replaces what we
// hold for its node only if it is signed by that node and its version is
// newer. Records received by gossip are passed on (rebroadcast) so they
// spread epidemically.
//
// Which key must have signed a record (README "Identity and policy"): for our own name, ours.
// With an Identity check (pki), a key bound to the name by a certificate
// that the check accepts. Without, the key of the record held for the name
// while that node is a member that has not left (first key seen holds).
func (g *Gossip) mergeRecords(recs []*record, rebroadcast bool) {
	now := time.Now()
	// Cheap filter first, under the lock: stale versions need no crypto.
	g.mu.Lock()
	fresh := recs[:0:0]
	for _, r := range recs {
		if old := g.catalog[r.name]; r.name != g.name && old != nil && r.version <= old.rec.version &&
			old.rec.signKey.Equal(r.signKey) {
			continue
		}
		fresh = append(fresh, r)
	}
	g.mu.Unlock()
	// Signatures and certificates without the lock.
	valid := fresh[:0]
	for _, r := range fresh {
		switch {
		case !r.verifySig():
			g.refused(r.name, "record not signed, or its signature does not verify", now)
		case r.name != g.name && g.identity != nil:
			if err := g.identity(r.name, r.meta, r.cert, r.signKey); err != nil {
				continue // the check logs its refusals
			}
			valid = append(valid, r)
		default:
			valid = append(valid, r)
		}
	}

	changed, dropped, unknown := false, 0, -1
	var forged []string
	g.mu.Lock()
	for _, r := range valid {
		if r.name == g.name {
			if !r.signKey.Equal(g.signPub) {
				forged = append(forged, r.name)
				continue
			}
			// A record of ours newer than our own: an earlier run of this
			// node. Ours must win; versions never wrap. (Our own record
			// echoed back by a peer has our version: not newer. Taking it
			// for newer re-announced on every echo, a broadcast storm that
			// cost every node several KB/s.)
			if r.version > g.version && g.version < math.MaxUint64 {
				g.version = math.MaxUint64
				if r.version < math.MaxUint64 {
					g.version = r.version + 1
				}
				g.own = nil
				g.announceOwnLocked(nil)
			}
			continue
		}
		old := g.catalog[r.name]
		p := g.peers[r.name]
		if old != nil && !old.rec.signKey.Equal(r.signKey) {
			// Another key for a known name: allowed when a certificate
			// vouches for it (checked above), or when the holder of the old
			// key is not a member or has left. A newer version is not
			// needed then: the old key's versions mean nothing to the new.
			pinned := g.identity == nil && p != nil && p.state != StateLeft && !old.rec.leaving
			if pinned {
				forged = append(forged, r.name)
				continue
			}
			if g.identity != nil && r.version <= old.rec.version {
				continue
			}
		} else if old != nil && r.version <= old.rec.version {
			continue
		}
		if old == nil && p == nil {
			if unknown < 0 {
				unknown = g.unknownLocked()
			}
			if unknown >= maxUnknown {
				dropped++
				continue
			}
			unknown++
		}
		g.catalog[r.name] = &catalogEntry{rec: r, seen: now}
		if rebroadcast {
			g.queueLocked(r.name, encodeRecordMsg(r), nil)
		}
		if p == nil {
			continue
		}
		if r.leaving && p.state == StateDead {
			p.state, p.since = StateLeft, now
			changed = true
		}
		if old == nil || old.rec.leaving != r.leaving || !equalExports(old.rec.exports, r.exports) ||
			old.rec.meta != r.meta || !bytes.Equal(old.rec.cert, r.cert) {
			changed = true
		}
	}
	g.mu.Unlock()
	for _, name := range forged {
		g.refused(name, "record signed by another key than the node's", now)
	}
	if dropped > 0 && g.limit.allow("unknown-records", now) {
		g.log.Warn("gossip: ignored catalog records of unknown nodes (too many)", "dropped", dropped)
	}
	if changed {
		g.notify()
	}
}

// refused logs a dropped record, once per node name per limitEvery.
func (g *Gossip) refused(name, reason string, now time.Time) {
	if g.limit.allow("refused:"+name, now) {
		g.log.Warn("gossip: dropped a record", "node", name, "reason", reason)
	}
}

// unknownLocked counts catalog entries of nodes not in the member table.
func (g *Gossip) unknownLocked() int {
	n := 0
	for name := range g.catalog {
		if g.peers[name] == nil {
			n++
		}
	}
	return n
}

// localState encodes our record and those of every listed member.
func (g *Gossip) localState() []byte {
	g.mu.Lock()
	own := g.ownRecordLocked()
	if g.quiet.Load() {
		own = nil
	}
	others := make([]*record, 0, len(g.catalog))
	for name, c := range g.catalog {
		if g.peers[name] != nil {
			others = append(others, c.rec)
		}
	}
	g.mu.Unlock()
	b, dropped := encodeState(own, others)
	if dropped > 0 && g.limit.allow("state-size", time.Now()) {
		g.log.Warn("gossip: catalog too large for one push/pull; some records left out", "dropped", dropped)
	}
	return b
}

var errMemberCap = errors.New("gossip: member cap reached")

// admitMember reports whether memberlist may take an alive message for
// name: a known member always, a new one while fewer than maxMembers are
// listed. Called under memberlist's node lock (it takes g.mu, as NotifyJoin
// does); a refusal is logged once per limitEvery, and memberlist's own line
// about it is debug (mlWriter).
func (g *Gossip) admitMember(name string) error {
	if name == g.name {
		return nil
	}
	g.mu.Lock()
	_, known := g.peers[name]
	full := !known && len(g.peers) >= g.maxMembers
	g.mu.Unlock()
	if !full {
		return nil
	}
	g.capped.Add(1)
	if g.limit.allow("member-cap", time.Now()) {
		g.log.Warn("gossip: member cap reached; new members ignored", "max", g.maxMembers, "name", name, "ignored", g.capped.Load())
	}
	return errMemberCap
}

// badInput logs a malformed message once per sender per limitEvery.
func (g *Gossip) badInput(what, sender string, err error) {
	g.malformed.Add(1)
	if sender == "" {
		sender = "unknown sender"
	}
	if g.limit.allow("decode:"+sender, time.Now()) {
		g.log.Warn("gossip: ignored malformed catalog "+what, "from", sender, "err", err)
	}
}

// maintainLoop forgets members gone longer than RetainGone and clears
// suspicions that memberlist resolved without telling us.
func (g *Gossip) maintainLoop() {
	defer g.wg.Done()
	every := min(max(g.retainGone/4, 10*time.Millisecond), 500*time.Millisecond)
	t := g.pacer.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-g.done:
			return
		case now := <-t.C:
			g.maintain(now)
			t.Reset(every)
		}
	}
}

func (g *Gossip) maintain(now time.Time) {
	refuted := g.refutedSuspects()
	var forgot []string
	changed := false
	g.mu.Lock()
	for name, p := range g.peers {
		switch p.state {
		case StateDead, StateLeft:
			if now.Sub(p.gone) >= g.retainGone {
				delete(g.peers, name)
				delete(g.catalog, name)
				forgot = append(forgot, name)
				changed = true
			}
		case StateSuspect:
			if now.After(p.suspectUntil) || (refuted[name] && p.since.Before(now.Add(-g.probe))) {
				p.state, p.since, p.suspectUntil = StateAlive, now, time.Time{}
				changed = true
			}
		}
	}
	for name, c := range g.catalog {
		if g.peers[name] == nil && name != g.name && now.Sub(c.seen) >= g.retainGone {
			delete(g.catalog, name)
		}
	}
	if changed {
		g.countLocked()
	}
	g.mu.Unlock()
	for _, name := range forgot {
		g.log.Debug("gossip: forgot member", "name", name)
	}
	if changed {
		g.notify()
	}
}

// reconnectLoop periodically tries to join a few dead (not left) members'
// gossip addresses, so that a healed partition reconverges by itself.
func (g *Gossip) reconnectLoop() {
	defer g.wg.Done()
	t := g.pacer.NewTimer(g.reconnect) // rides the beat: an idle node's wakeups are its cost
	defer t.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-t.C:
			t.Reset(g.reconnect)
		}
		for _, a := range g.deadAddrs(reconnectBatch) {
			select {
			case <-g.done:
				return
			default:
			}
			n, err := g.ml.Join([]string{a.String()})
			g.log.Debug("gossip: reconnect", "addr", a.String(), "ok", n > 0, "err", err)
		}
	}
}

// deadAddrs returns up to n random gossip addresses of dead members.
func (g *Gossip) deadAddrs(n int) []netip.AddrPort {
	var out []netip.AddrPort
	g.mu.Lock()
	for _, p := range g.peers {
		if p.state == StateDead && p.addr.IsValid() {
			out = append(out, p.addr)
		}
	}
	g.mu.Unlock()
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min(n, len(out))]
}

// refutedSuspects returns, when this node holds any member suspect, the
// members memberlist itself holds alive: memberlist has no event for a
// suspicion refuted (an alive message with a newer incarnation and the same
// meta), so without asking, a refuted member would stay suspect here until
// its longest suspicion timeout ran out (8 s at 100 members, and two
// probe intervals more). A member
// marked suspect within the last probe interval is left alone by the caller:
// memberlist logs the failed probe (markSuspect) just before it marks the
// member suspect. Called without g.mu (Members takes memberlist's lock,
// under which memberlist calls into this package).
func (g *Gossip) refutedSuspects() map[string]bool {
	g.mu.Lock()
	var suspects []string
	for name, p := range g.peers {
		if p.state == StateSuspect {
			suspects = append(suspects, name)
		}
	}
	g.mu.Unlock()
	if len(suspects) == 0 || g.ml == nil {
		return nil
	}
	alive := make(map[string]bool)
	for _, name := range suspects {
		if st, ok := g.ml.NodeState(name); ok && st == memberlist.StateAlive {
			alive[name] = true
		}
	}
	return alive
}

// sendLoop sends this node's record over TCP to every member when it is too
// big for UDP gossip.
func (g *Gossip) sendLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.done:
			return
		case <-g.bigKick:
		}
		g.mu.Lock()
		msg := encodeRecordMsg(g.ownRecordLocked())
		var to []*memberlist.Node
		for _, p := range g.peers {
			if (p.state == StateAlive || p.state == StateSuspect) && p.addr.IsValid() {
				to = append(to, &memberlist.Node{Name: p.name, Addr: p.addr.Addr().AsSlice(), Port: p.addr.Port()})
			}
		}
		g.mu.Unlock()
		if len(msg) <= maxBroadcastBytes {
			continue // small again: gossip carries it
		}
		for _, n := range to {
			select {
			case <-g.done:
				return
			default:
			}
			if err := g.ml.SendReliable(n, msg); err != nil {
				g.log.Debug("gossip: send catalog", "to", n.Name, "err", err)
			}
		}
	}
}
