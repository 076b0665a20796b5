package tunnel

import (
	"golang.zx2c4.com/wireguard/device"

	"github.com/meshd/meshd/internal/key"
)

// Static-static secrets ahead of need. The X25519 of this node's private
// key and a peer's public key keys the peer's path probes, the session
// proof and WireGuard's handshake (its precomputed static-static). Made
// when the peer first has traffic, it was three of the X25519 on a cold
// peer's critical path (the dialler's first probe and WireGuard peer, the
// acceptor's probe check and WireGuard peer) at 130-160 µs each here.
// secretLoop makes it for every member as members arrive, off that path:
// one X25519 and 32 bytes per member, once (1,000 members: ~0.15 s of CPU
// spread over the loop's run, see README "Performance").

// secretLoop computes the bind's shared secret of every peer that has
// none yet, each time SetPeers added peers, until the tunnel closes.
func (t *Tunnel) secretLoop() {
	defer t.wg.Done()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.secretKick:
		}
		t.mu.Lock()
		pubs := make([]key.PublicKey, 0, len(t.peers))
		for pub := range t.peers {
			pubs = append(pubs, pub)
		}
		t.mu.Unlock()
		for _, pub := range pubs {
			if t.ctx.Err() != nil {
				return
			}
			t.bind.sharedSecret(pub) // computes it once; a removed peer is skipped
		}
	}
}

// kickSecrets tells secretLoop that peers were added. It never blocks.
func (t *Tunnel) kickSecrets() {
	select {
	case t.secretKick <- struct{}{}:
	default:
	}
}

// staticStatic is the device's source of static-static secrets
// (device.SetStaticStatic): the bind's, once computed. It takes no lock
// (WireGuard calls it holding its own).
func (t *Tunnel) staticStatic(local, remote device.NoisePublicKey) (ss [32]byte, ok bool) {
	if key.PublicKey(local) != t.pub {
		return ss, false
	}
	pp := t.bind.peer(key.PublicKey(remote))
	if pp == nil {
		return ss, false
	}
	s := pp.secret.Load()
	if s == nil || len(*s) != len(ss) {
		return ss, false
	}
	copy(ss[:], *s)
	return ss, true
}
