package tunnel

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// The tunnel's peer set (SetPeers, SetWarm) and each peer's WireGuard
// entry: added once the peer has traffic (ensureWG), poked for a handshake
// (poke, pokeStale) and removed again when idle (trimLoop).

// SetPeers makes the device's peers exactly ps: new ones are added (as
// inactive WireGuard peers; a session is dialled only if SetWarm named
// them), changed endpoints are updated, missing ones are removed with
// their sessions.
func (t *Tunnel) SetPeers(ps []Peer) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	want := make(map[key.PublicKey]Peer, len(ps))
	for _, p := range ps {
		if p.PublicKey != t.pub && !p.PublicKey.IsZero() {
			want[p.PublicKey] = p
		}
	}
	var removed, added []*peer
	var addedAt []netip.AddrPort
	for pub, p := range t.peers {
		if _, ok := want[pub]; !ok {
			p.cancel() // before its WireGuard entry goes: ensureWG adds none after
			delete(t.peers, pub)
			delete(t.byIP, p.ip)
			removed = append(removed, p)
			t.bind.RemovePeer(pub)
		}
	}
	for pub, w := range want {
		p, ok := t.peers[pub]
		if ok && p.endpoint == w.Endpoint {
			continue
		}
		t.bind.SetPeer(pub, w.Endpoint)
		if ok {
			p.endpoint = w.Endpoint
			continue // WireGuard's endpoint is the peer itself; the bind routes it
		}
		// No WireGuard peer yet (ensureWG adds it when a session is
		// needed or the peer makes contact): a member without traffic
		// costs a few hundred bytes here, no goroutine.
		p = newPeer(t, pub)
		t.peers[pub] = p
		t.byIP[p.ip] = p
		added = append(added, p)
		addedAt = append(addedAt, w.Endpoint)
		if t.warm[pub] {
			p.want = true
		}
		p.endpoint = w.Endpoint
	}
	t.mu.Unlock()
	if len(added) > 0 {
		t.kickSecrets()
	}

	var err error
	var uapi strings.Builder
	t.ipcMu.Lock()
	for _, p := range removed {
		if p.wgOn {
			fmt.Fprintf(&uapi, "public_key=%s\nremove=true\n", p.pub.Hex())
			p.wgOn = false
		}
	}
	if uapi.Len() > 0 {
		if err = t.dev.IpcSet(uapi.String()); err != nil {
			err = fmt.Errorf("tunnel: configure peers: %w", err)
		}
	}
	t.ipcMu.Unlock()
	for _, p := range removed {
		p.stop()
	}
	for i, p := range added {
		if t.bind.TakeStranger(addedAt[i]) {
			// Its handshake reached us before we knew its key and was
			// dropped; WireGuard would retry only after 5 s. Answer with
			// a handshake of our own now.
			t.poke(p)
		}
		p.mu.Lock()
		p.ensureDialLocked()
		p.mu.Unlock()
	}
	return err
}

// ensureWG makes p a WireGuard peer of the device if it is not one yet
// (WireGuard peers exist only for peers with traffic: a session needed,
// being dialled, or contact from the peer). It reports whether p is one.
func (t *Tunnel) ensureWG(p *peer) bool {
	t.ipcMu.Lock()
	defer t.ipcMu.Unlock()
	return t.ensureWGLocked(p)
}

func (t *Tunnel) ensureWGLocked(p *peer) bool {
	if p.wgOn {
		return true
	}
	if p.ctx.Err() != nil {
		return false
	}
	err := t.dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\nallowed_ip=%s/128\n",
		p.pub.Hex(), p.pub.Hex(), p.ip))
	if err != nil {
		p.logger().Warn("tunnel: add WireGuard peer", "err", err)
		return false
	}
	p.wgOn = true
	p.wgSince = time.Now()
	t.bind.SetWG(p.pub, true)
	return true
}

// wgIdleAfter is how long a peer without a session keeps its WireGuard
// entry: longer than WireGuard's keypair lifetime (RejectAfterTime,
// 180 s), so that a peer never sends us data on a keypair we forgot.
const wgIdleAfter = 200 * time.Second

// trimLoop removes the WireGuard entries of peers that have had no session
// and no dial for wgIdleAfter.
func (t *Tunnel) trimLoop() {
	defer t.wg.Done()
	tick := time.NewTicker(wgIdleAfter / 8)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		t.trimIdle(time.Now())
	}
}

func (t *Tunnel) trimIdle(now time.Time) {
	t.mu.Lock()
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()
	for _, p := range peers {
		t.ipcMu.Lock()
		if p.wgOn {
			p.mu.Lock()
			idle := p.out == nil && p.in == nil && !p.dialing && !p.want && p.waiters == 0 &&
				now.Sub(p.quietSince) >= wgIdleAfter && now.Sub(p.wgSince) >= wgIdleAfter
			p.mu.Unlock()
			if idle && t.dev.IpcSet("public_key="+p.pub.Hex()+"\nremove=true\n") == nil {
				p.wgOn = false
				t.bind.SetWG(p.pub, false)
				p.logger().Debug("tunnel: idle WireGuard peer removed")
			}
		}
		t.ipcMu.Unlock()
	}
}

// poke makes WireGuard initiate a handshake with p now (turning a
// persistent keepalive on sends one at once; it is turned off again in
// the same configuration).
func (t *Tunnel) poke(p *peer) {
	t.ipcMu.Lock()
	if !t.ensureWGLocked(p) {
		t.ipcMu.Unlock()
		return
	}
	err := t.dev.IpcSet("public_key=" + p.pub.Hex() + "\nupdate_only=true\npersistent_keepalive_interval=25\n" +
		"public_key=" + p.pub.Hex() + "\nupdate_only=true\npersistent_keepalive_interval=0\n")
	t.ipcMu.Unlock()
	if err != nil && p.ctx.Err() == nil {
		p.logger().Debug("tunnel: poke peer", "err", err)
	}
}

// SetWarm makes pubs the peers this node keeps a session with (dialled now
// and redialled when it breaks); peers no longer warm keep their session
// until CloseIdle closes it. Unknown keys are remembered for when SetPeers
// adds them.
func (t *Tunnel) SetWarm(pubs []key.PublicKey) {
	want := make(map[key.PublicKey]bool, len(pubs))
	for _, pub := range pubs {
		want[pub] = true
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	var changed []*peer
	for pub := range t.warm {
		if !want[pub] {
			if p := t.peers[pub]; p != nil {
				changed = append(changed, p)
			}
		}
	}
	for pub := range want {
		if !t.warm[pub] {
			if p := t.peers[pub]; p != nil {
				changed = append(changed, p)
			}
		}
	}
	t.warm = want
	t.mu.Unlock()
	for _, p := range changed {
		p.setWant(want[p.pub])
	}
}

// pokeStale makes the peers the bind queues (see PathBind.Stale)
// WireGuard peers: one whose initiation the bind holds gets it handed to
// WireGuard, which answers it; one that probes us (it dials a session and
// its handshake follows) is added; one that still uses a keypair of this
// node's previous run gets a fresh handshake.
func (t *Tunnel) pokeStale() {
	defer t.wg.Done()
	for {
		select {
		case <-t.ctx.Done():
			return
		case pub := <-t.bind.Stale():
			t.mu.Lock()
			p := t.peers[pub]
			t.mu.Unlock()
			if p == nil {
				continue
			}
			if pkt, from, ok := t.bind.TakeHeld(pub); ok {
				if t.ensureWG(p) {
					trace(t.pub, pub, "initiation handed to WireGuard")
					t.bind.Reinject(pub, pkt, from)
				}
				continue
			}
			if t.bind.TakeWantWG(pub) {
				trace(t.pub, pub, "WireGuard peer added on a probe")
				t.ensureWG(p)
				continue
			}
			p.logger().Debug("tunnel: peer makes contact: handshaking")
			trace(t.pub, pub, "poke")
			t.poke(p)
		}
	}
}

// called handles a peer's authenticated request to dial it.
func (t *Tunnel) called(pub key.PublicKey) {
	t.mu.Lock()
	p := t.peers[pub]
	t.mu.Unlock()
	if p != nil {
		p.calledBy()
	}
}
